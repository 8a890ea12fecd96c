# Mask R-CNN + FPN, Conformer-B/16, COCO 1x: the official S/32 recipe with this size
# (the official code reports detection with S/32 only).
_base_ = './mask_rcnn_conformer_s_coco.py'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conformer-b.pth')),
    neck=dict(in_channels=[384, 768, 1536, 1536]))
