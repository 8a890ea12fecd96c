# The segmentation schedule of every family: 160k iterations, AdamW lr 6e-5,
# betas (0.9, 0.999), wd 0.01 for 16 images per iteration (8 GPUs x 2), as
# the Swin and CrossFormer UperNet recipes; each family adds its own no-decay
# rule (paramwise_cfg) in its config.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]
