# UperNet, CrossFormer++-B, ADE20K 160k: the S recipe with the B backbone (D = 96) and its
# stochastic depth (no official ++-B segmentation config). Target: none known here.
_base_ = './upernet_crossformer_pp_s_ade20k.py'

model = dict(
    backbone=dict(arch='pp_base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer_pp-b.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
