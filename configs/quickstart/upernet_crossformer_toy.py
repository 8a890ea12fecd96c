# Quick start: the UperNet + CrossFormer of configs/upernet_crossformer_s_ade20k.py on
# the ADE20K-format toy shapes dataset (tools/misc/make_toy_datasets.py), from scratch
# on CPU. Only the data, the image size, the schedule and the model width change.
_base_ = '../upernet_crossformer_s_ade20k.py'

data_root = 'data/toy_ade/ADEChallengeData2016'
# ADE20K layout and label convention (0 = ignore, reduce_zero_label), own classes
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle', 'star', 'cross'),
    palette=[[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0], [140, 60, 220], [0, 200, 120]])
crop_size = (160, 160)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        drop_path_rate=0.0,
        init_cfg=None),  # from scratch: no ImageNet weights needed
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=6),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=6))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(320, 160), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 160), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=100, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=2))
randomness = dict(seed=0)
