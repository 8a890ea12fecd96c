# UperNet, CrossFormer++-L, ADE20K 160k: the S recipe with the L backbone (D = 128) and
# CrossFormer-L's stochastic depth (no official ++-L segmentation config). Target: none known here.
_base_ = './upernet_crossformer_pp_s_ade20k.py'

model = dict(
    backbone=dict(arch='pp_large', drop_path_rate=0.5, init_cfg=dict(checkpoint='checkpoints/crossformer_pp-l.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
