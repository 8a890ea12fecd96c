# UperNet with a Conv2Former-T backbone, ADE20K, 160k iters, 512x512 crops.
# Conv2Former paper (TPAMI 2024): 48.0 mIoU. Its dense code is not released;
# the paper follows ConvNeXt, so this is ConvNeXt-T's UperNet recipe
# (facebookresearch/ConvNeXt semantic_segmentation/configs/convnext: drop path
# 0.4, AdamW lr 1e-4, wd 0.05, sliding-window test with 512 crops, stride 341).
_base_ = './_base_/upernet_ade20k.py'

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
    # Conv2Former-T stage widths; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# AdamW lr 1e-4, wd 0.05 (instead of the base's 6e-5, 0.01), with ConvNeXt-T's
# stage-wise lr decay (0.9, 6 layer ids; mmseg's own constructor only accepts
# classes named ConvNeXt, so mmhybrid has one that asks the backbone for its
# layer ids). As in ConvNeXt, 1-D parameters (norms, biases, layer scales) get
# no weight decay. ConvNeXt trains in fp16: add --amp to tools/train.py on a
# GPU.
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))
