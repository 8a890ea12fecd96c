# Cascade Mask R-CNN + FPN, CrossFormer-S, COCO 3x with multi-scale crop training. Target:
# 52.2 box AP / 45.2 mask AP on val2017 (CrossFormer, ICLR 2022; official README). No
# official Cascade config was released: the base is the Swin/ConvNeXt Cascade 3x recipe the
# result is compared with (GIoU 4conv1fc heads, DETR-style crops, 36 epochs) and the
# optimizer is CrossFormer's detection one (AdamW lr 1e-4, wd 1e-4 on every parameter).
# Backbone settings and weights: docs/models.md#crossformer.
_base_ = './_base_/cascade_mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormer', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
