# Mask R-CNN + FPN, Conv2Former-S, COCO 3x: the T recipe (ConvNeXt-T's Mask R-CNN 3x;
# ConvNeXt has no S Mask R-CNN) with ConvNeXt-S's detection depth settings: drop path
# 0.6 and layer-wise lr decay over 12 layer ids. Same widths as T.
# Target: none known to this project (the official repository lists no dense results).
_base_ = './mask_rcnn_conv2former_t_coco.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.6, init_cfg=dict(checkpoint='checkpoints/conv2former-s.pth')))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
