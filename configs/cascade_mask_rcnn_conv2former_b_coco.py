# Cascade Mask R-CNN + FPN, Conv2Former-B, COCO 3x: the T recipe with ConvNeXt-B's Cascade
# settings (drop path 0.7, layer-wise lr decay 0.8 over 12 layer ids) and B's widths.
# Target: none known to this project (the official repository lists no dense results).
_base_ = './cascade_mask_rcnn_conv2former_t_coco.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.7, init_cfg=dict(checkpoint='checkpoints/conv2former-b.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8, num_layers=12))
