# The detection quick starts' data and schedule: the toy shapes dataset of
# tools/misc/make_toy_datasets.py in COCO format (160 px scenes, five classes),
# trained from scratch on CPU in minutes. Everything else is the COCO setting
# (mmdet's COCO dataset base, the shared detection schedule, mmdet's runtime).
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    '../../_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

data_root = 'data/toy_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star', 'cross'))
image_size = (160, 160)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# (names starting with '__' stay out of the resolved config)
__split = dict(data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(**__split, ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**__split, ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# AdamW at a from-scratch learning rate, linear warmup, cosine decay. Small
# batches: on 2 CPU cores, more updates per minute beat larger batches here.
max_epochs = 10
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=300),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.01, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=1, max_keep_ckpts=2))
auto_scale_lr = dict(base_batch_size=4)
randomness = dict(seed=0)  # the numbers in the README are reproducible
