# COCO instances (mmdet's coco_instance.py) trained with the DETR-style multi-scale
# augmentation of the Swin / ConvNeXt 3x recipes: after the flip, either a resize to
# one of 11 shorter sides (480, 512, ..., 800; longer side at most 1333), or a resize
# to a shorter side of 400/500/600, a random crop of 384-600 px per side, then that
# multi-scale resize. Validation and test are mmdet's (1333x800).
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

# (a name starting with '__' stays out of the resolved config)
__sides = [(1333, 480 + 32 * i) for i in range(11)]
__crop_then_resize = [
    dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
    dict(type='RandomChoiceResize', scales=__sides, keep_ratio=True),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice',
         transforms=[[dict(type='RandomChoiceResize', scales=__sides, keep_ratio=True)], __crop_then_resize]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
