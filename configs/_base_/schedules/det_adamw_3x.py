# The 3x detection schedule: 36 epochs, lr x0.1 after epochs 27 and 33, the
# 500-iteration linear warmup and AdamW lr 1e-4, wd 1e-4 of det_adamw_1x.py (16
# images per iteration). The families' 3x recipes change the optimizer in their configs.
_base_ = './det_adamw_1x.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
