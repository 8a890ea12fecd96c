# Semantic FPN, CrossFormer-S, ADE20K 80k, 512x512 crops (AdamW lr 1e-4, wd 1e-4 on every
# parameter, poly 0.9, 16 images per iteration: the official fpn_crossformer_*_ade20k_40k.py
# settings, which are the base's). Target: 46.4 mIoU single-scale (CrossFormer, ICLR 2022;
# official README). The official test resize rounds to multiples of 32 (AlignResize);
# mmseg's plain resize is used here, as the backbone takes any size.
# Backbone settings and weights: docs/models.md#crossformer.
_base_ = './_base_/fpn_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormer', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
