# Mask R-CNN + FPN, Conv2Former-B, COCO 3x: the T recipe (ConvNeXt-T's Mask R-CNN 3x;
# ConvNeXt has no B Mask R-CNN) with ConvNeXt-B's detection depth settings: drop path
# 0.7 and layer-wise lr decay over 12 layer ids; B's widths (96-768).
# Target: none known to this project (the official repository lists no dense results).
_base_ = './mask_rcnn_conv2former_t_coco.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.7, init_cfg=dict(checkpoint='checkpoints/conv2former-b.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
