# UperNet, CrossFormer++-S, ADE20K 160k, 512x512 crops (the base's schedule), with the official ++
# config's settings (G = 7, I = (8, 4, 2, 1), no decay on 'norm'). Target: no published UperNet
# number for CrossFormer++ is known here. Backbone settings and weights: docs/models.md, CrossFormer++.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormerPP', arch='pp_small', group_size=7, interval=(8, 4, 2, 1),
                  drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_pp-s.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))  # stage 3

# No weight decay on parameters named 'norm', as the official recipe (the position-bias MLP
# LayerNorms and the activation cooling layers' ex_ln keep theirs, as there).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
