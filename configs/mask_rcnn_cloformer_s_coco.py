# Mask R-CNN + FPN, CloFormer-S, COCO 1x. No detection result or dense recipe was
# published: the recipe PVT/PVTv2 use for lightweight pyramid backbones (AdamW
# lr 1e-4, wd 1e-4, 1x: the base's). No ImageNet weights were released: see
# docs/models.md#cloformer for training or converting your own.
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.CloFormer', arch='s', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cloformer-s.pth')),
    neck=dict(in_channels=[64, 128, 224, 448]))
