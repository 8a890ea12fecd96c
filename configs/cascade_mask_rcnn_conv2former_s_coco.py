# Cascade Mask R-CNN + FPN, Conv2Former-S, COCO 3x: the T recipe with ConvNeXt-S's Cascade
# settings (drop path 0.6, layer-wise lr decay 0.7 over 12 layer ids); same widths as T.
# Target: none known to this project (the official repository lists no dense results).
_base_ = './cascade_mask_rcnn_conv2former_t_coco.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.6, init_cfg=dict(checkpoint='checkpoints/conv2former-s.pth')))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
