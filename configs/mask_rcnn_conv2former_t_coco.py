# Mask R-CNN + FPN with a Conv2Former-T backbone, COCO, 3x schedule with
# multi-scale training. Conv2Former paper (TPAMI 2024): 48.0 box AP on COCO
# val2017. Its dense code is not released; the paper follows ConvNeXt, so this
# is ConvNeXt-T's Mask R-CNN 3x recipe (facebookresearch/ConvNeXt
# object_detection/configs/convnext, drop path 0.4, AdamW lr 1e-4, wd 0.05).
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(
        type='mmhybrid.Conv2Former',
        arch='tiny',
        drop_path_rate=0.4,
        # a LayerNorm on every output, as ConvNeXt's dense backbone has (new
        # layers: the ImageNet file has no weights for them)
        out_norms=True,
        # The official ImageNet-1k file. A file that also pickles timm's
        # training arguments is refused by the safe loader: convert it once with
        # tools/model_converters/convert.py conv2former FILE
        # checkpoints/conv2former-t.pth --trust
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    # Conv2Former-T stage widths.
    neck=dict(in_channels=[72, 144, 288, 576]))

# Multi-scale training with DETR-style random crops, as ConvNeXt's 3x recipe.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(1333, 480), (1333, 512), (1333, 544),
                            (1333, 576), (1333, 608), (1333, 640),
                            (1333, 672), (1333, 704), (1333, 736),
                            (1333, 768), (1333, 800)],
                    keep_ratio=True)
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(1333, 400), (1333, 500), (1333, 600)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=[(1333, 480), (1333, 512), (1333, 544),
                            (1333, 576), (1333, 608), (1333, 640),
                            (1333, 672), (1333, 704), (1333, 736),
                            (1333, 768), (1333, 800)],
                    keep_ratio=True)
            ]
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
