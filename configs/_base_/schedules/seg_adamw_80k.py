# The Semantic FPN schedule of PVT and CrossFormer: 80k iterations, AdamW lr 1e-4,
# wd 1e-4, poly decay (power 0.9) to 0 with no warmup, 16 images per iteration.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)]
