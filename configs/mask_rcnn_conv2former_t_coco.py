# Mask R-CNN + FPN, Conv2Former-T, COCO 3x with multi-scale training. Target:
# 48.0 box AP (Conv2Former, TPAMI 2024). No dense code was released; the paper
# follows ConvNeXt, so this is ConvNeXt-T's Mask R-CNN 3x recipe (drop path 0.4,
# AdamW lr 1e-4, wd 0.05; DETR-style multi-scale crops and 36 epochs from the base).
# Backbone settings and weights: docs/models.md#conv2former.
_base_ = './_base_/mask_rcnn_coco_3x.py'

# AdamW wd 0.05 (lr 1e-4 from the base) with ConvNeXt-T's layer-wise lr decay
# (0.95 over 6 layer ids; mmdet's own constructor only accepts classes named
# ConvNeXt, so mmhybrid has one that asks the backbone for its layer ids). As
# in ConvNeXt, 1-D parameters (norms, biases, layer scales) get no weight
# decay. ConvNeXt trains in fp16: add --amp to tools/train.py on a GPU.
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))

model = dict(
    backbone=dict(type='mmhybrid.Conv2Former', arch='tiny', drop_path_rate=0.4, out_norms=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))
