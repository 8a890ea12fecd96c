# UperNet with a CloFormer-S backbone, ADE20K, 160k iters, 512x512 crops.
# CloFormer (Fan et al., 2023) has no published segmentation result and no
# official dense recipe: this is Swin's UperNet recipe (AdamW lr 6e-5,
# wd 0.01, 1500-iter warmup, poly: the base's) with no decay on the
# backbone's norms.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CloFormer',
        arch='s',
        drop_path_rate=0.1,
        # No official ImageNet weights were released. Train CloFormer-S on
        # ImageNet-1k (the official qhfan/CloFormer code, or any trainer
        # producing the same keys) and put the file here: the backbone's
        # converter reads the official layout (weights under 'model', the
        # classifier's norm/head dropped). A training checkpoint that also
        # pickles its yacs config is refused by the safe loader: convert it
        # once with tools/model_converters/convert.py cloformer FILE
        # checkpoints/cloformer-s.pth --trust. To train from scratch instead,
        # set init_cfg=None (and expect a longer schedule to be needed).
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/cloformer-s.pth')),
    # CloFormer-S stage widths; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[64, 128, 224, 448]),
    auxiliary_head=dict(in_channels=224))

# No weight decay on the backbone's normalisation layers: the GroupNorms
# (norm1, norm2, patch_embed.layernorm, all named '*norm*') and the BatchNorms
# of the stem (patch_embed.convK.conv.1) and of the downsampling shortcuts
# (downsample.1). The heads keep their decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            '.conv.1.': dict(decay_mult=0.),
            '.downsample.1.': dict(decay_mult=0.),
        }))
