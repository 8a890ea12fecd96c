# Cascade Mask R-CNN + FPN, Conv2Former-T, COCO 3x with multi-scale crop training.
# No dense code was released and the paper follows ConvNeXt, so this is ConvNeXt-T's
# Cascade Mask R-CNN 3x recipe (cascade_mask_rcnn_convnext_tiny_..._giou_4conv1f_adamw_3x:
# GIoU 4conv1fc heads, DETR-style crops and 36 epochs from the base; drop path 0.4).
# Target: none known to this project (the official repository lists no dense results).
# Backbone settings and weights: docs/models.md#conv2former.
_base_ = './_base_/cascade_mask_rcnn_coco.py'

# ConvNeXt's Cascade optimizer: AdamW lr 2e-4, wd 0.05 (no decay on 1-D parameters), with
# layer-wise lr decay 0.7 over 6 layer ids through mmhybrid's constructor (mmdet's only
# accepts classes named ConvNeXt). ConvNeXt trains in fp16: add --amp on a GPU.
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_type='layer_wise', decay_rate=0.7, num_layers=6),
    constructor='mmhybrid.LayerDecayOptimizerConstructor')

model = dict(
    backbone=dict(type='mmhybrid.Conv2Former', arch='tiny', drop_path_rate=0.4, out_norms=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))
