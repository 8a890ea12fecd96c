# UperNet, CrossFormer-L, ADE20K 160k: the S recipe with the L backbone
# (D = 128). Target: 50.4 mIoU single-scale (CrossFormer, ICLR 2022).
_base_ = './upernet_crossformer_s_ade20k.py'

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5, init_cfg=dict(checkpoint='checkpoints/crossformer-l.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
