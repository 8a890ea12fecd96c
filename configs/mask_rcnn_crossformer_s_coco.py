# Mask R-CNN + FPN, CrossFormer-S, COCO 1x (AdamW lr 1e-4, wd 1e-4: the base's).
# Target: 45.4 box AP / 41.4 mask AP on val2017 (CrossFormer, ICLR 2022).
# Backbone settings and weights: docs/models.md#crossformer.
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormer', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
