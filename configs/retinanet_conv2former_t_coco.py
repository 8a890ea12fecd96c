# RetinaNet + FPN with a Conv2Former-T backbone, COCO, 1x schedule.
# The Conv2Former paper reports no RetinaNet result (ConvNeXt neither): this
# is the backbone's ConvNeXt-T dense recipe (drop path 0.4, AdamW lr 1e-4,
# wd 0.05, layer-wise lr decay 0.95, no decay on norms, biases and layer
# scales) on mmdet's RetinaNet 1x.
_base_ = './_base_/retinanet_coco.py'

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

# AdamW wd 0.05 (lr 1e-4 and the 1x schedule from the base) with ConvNeXt-T's
# detection lr decay (layer-wise 0.95 over 6 layer ids) and no weight decay on
# 1-D parameters (norms, biases, layer scales).
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))
