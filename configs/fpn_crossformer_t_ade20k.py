# Semantic FPN, CrossFormer-T, ADE20K 80k: the S recipe with stochastic depth 0.1 (no
# official T config; target: none published).
_base_ = './fpn_crossformer_s_ade20k.py'

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1, init_cfg=dict(checkpoint='checkpoints/crossformer-t.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
