# A config of the shape of mmdet/mmseg ones (iteration-based loop, validation,
# checkpoints with save_best, nccl backend asked for) around a toy model that
# trains in seconds on CPU. Needs tests/data/tools on PYTHONPATH.
custom_imports = dict(imports=['mmhybrid', 'mmhybrid_tools_toy'],
                      allow_failed_imports=False)

model = dict(type='ToyRegressor')
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ToyRegressionDataset', length=16))
val_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ToyRegressionDataset', length=8))
test_dataloader = val_dataloader
val_evaluator = dict(type='ToyMAE')
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', by_epoch=False, milestones=[3, 5]),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2,
                    save_best='toy/mae', rule='less'),
    logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
