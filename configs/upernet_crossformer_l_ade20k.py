# UperNet with a CrossFormer-L backbone, ADE20K, 160k iters, 512x512 crops.
# CrossFormer paper (ICLR 2022): 50.4 mIoU single-scale.
# Same recipe as CrossFormer-S, with the L backbone (D = 128).
_base_ = './upernet_crossformer_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/crossformer-l.pth')),
    # Stage widths D, 2D, 4D, 8D with D = 128; auxiliary head on stage 3.
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
