# Mask R-CNN + FPN, Conformer-S/32, COCO 1x: the official recipe (pengzhiliang/
# Conformer mask_rcnn_conformer_small_patch32_fpn_1x_coco.py: AdamW lr 1e-4, wd 1e-4
# on every parameter, 1344x800, frozen BN statistics and stem). Target: 43.6 box AP.
# Backbone settings and weights: docs/models.md#conformer.
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.Conformer', arch='small_p32', drop_path_rate=0.0, norm_eval=True, frozen_stages=0,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conformer-s.pth')),
    neck=dict(in_channels=[256, 512, 1024, 1024]))  # CNN-branch widths C1, C2, C3, C3

# The official image size: 1344x800 (mmdet's default is 1333x800).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1344, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1344, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
