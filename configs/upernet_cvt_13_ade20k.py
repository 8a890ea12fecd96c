# UperNet with a CvT-13 backbone, ADE20K, 160k iters, 512x512 crops.
# No dense-prediction result has been published for CvT, so there is no number
# to reproduce: this is the recipe used here, mmseg's Swin-T UperNet recipe
# (AdamW lr 6e-5, wd 0.01, warmup 1500, poly: the base's) with the official
# CvT no-decay rule (BatchNorm, LayerNorm, biases and the class token),
# batch 16.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CvT',
        arch='13',
        # official ImageNet setting: a linear ramp to 0.1 in the last stage only
        drop_path_rate=0.1,
        # stride-32 level: one CvT token embedding (3x3 conv s2 + LayerNorm,
        # 384 -> 768) after the three official stages; new, not in the file
        extra_stage=True,
        # BatchNorms of the attention projections keep the ImageNet statistics
        # (2 crops per GPU give poor batch statistics)
        norm_eval=True,
        # The official ImageNet-1k file CvT-13-224x224-IN-1k.pth (a plain
        # state dict), renamed; the converter accepts it as downloaded.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-13.pth')),
    # CvT-13 widths 64, 192, 384 and the stride-32 level's 768 (pyramid
    # pooling on it); the auxiliary head reads the last official stage (384).
    decode_head=dict(in_channels=[64, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# No weight decay on norms (BatchNorm and LayerNorm, heads included), biases
# and the class token, the rule of the official CvT training code.
optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'cls_token': dict(decay_mult=0.)}))
