# UperNet, CrossFormer-S, ADE20K 160k, 512x512 crops (AdamW lr 6e-5, wd 0.01,
# warmup 1500 + poly, batch 16: the base's). Target: 47.6 mIoU single-scale
# (CrossFormer, ICLR 2022). Backbone settings and weights: docs/models.md#crossformer.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormer', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))  # stage 3

# No weight decay on parameters named 'norm', as the official recipe (the
# LayerNorms inside the position-bias MLPs keep theirs, as there).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
