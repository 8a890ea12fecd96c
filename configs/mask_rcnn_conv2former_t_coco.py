# Mask R-CNN + FPN, Conv2Former-T, COCO 3x with multi-scale training. Target:
# 48.0 box AP (Conv2Former, TPAMI 2024). No dense code was released; the paper
# follows ConvNeXt, so this is ConvNeXt-T's Mask R-CNN 3x recipe (drop path 0.4,
# AdamW lr 1e-4, wd 0.05). Backbone settings and weights: docs/models.md#conv2former.
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.Conv2Former', arch='tiny', drop_path_rate=0.4, out_norms=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))

# Multi-scale training with DETR-style random crops, as ConvNeXt's 3x recipe
# (a name starting with '__' stays out of the resolved config).
__scales = [(1333, 480 + 32 * i) for i in range(11)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=__scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=__scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# 3x: 36 epochs, steps at 27 and 33 (500-iter linear warmup from the base).
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]

# AdamW wd 0.05 (lr 1e-4 from the base) with ConvNeXt-T's layer-wise lr decay
# (0.95 over 6 layer ids; mmdet's own constructor only accepts classes named
# ConvNeXt, so mmhybrid has one that asks the backbone for its layer ids). As
# in ConvNeXt, 1-D parameters (norms, biases, layer scales) get no weight
# decay. ConvNeXt trains in fp16: add --amp to tools/train.py on a GPU.
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))
