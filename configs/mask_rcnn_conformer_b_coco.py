# Mask R-CNN + FPN with a Conformer-B/16 backbone, COCO, 1x schedule. The
# official code reports detection with S/32 only: this is its recipe
# (pengzhiliang/Conformer, mask_rcnn_conformer_small_patch32_fpn_1x_coco.py)
# with this size.
_base_ = './mask_rcnn_conformer_s_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        # the official ImageNet-1k file (Conformer_base_patch16.pth)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conformer-b.pth')),
    neck=dict(in_channels=[384, 768, 1536, 1536]))
