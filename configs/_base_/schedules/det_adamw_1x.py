# The detection schedule of every family: mmdet's 1x (12 epochs, steps at 8
# and 11, 500-iteration linear warmup) with AdamW lr 1e-4, wd 1e-4 for 16
# images per iteration (8 GPUs x 2; mmdet's auto_scale_lr base_batch_size=16).
# The detection recipe of CrossFormer's paper, of PVT/PVTv2 and of Conformer's
# official code; families with another optimizer change it in their configs.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
