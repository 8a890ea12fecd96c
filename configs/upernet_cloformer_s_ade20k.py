# UperNet, CloFormer-S, ADE20K 160k, 512x512 crops. No segmentation result or
# dense recipe was published: Swin's UperNet recipe (AdamW lr 6e-5, wd 0.01,
# 1500-iter warmup, poly: the base's) with no decay on the backbone's norms. No
# ImageNet weights were released: see docs/models.md#cloformer.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.CloFormer', arch='s', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cloformer-s.pth')),
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
