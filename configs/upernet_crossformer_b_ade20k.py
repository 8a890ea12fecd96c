# UperNet with a CrossFormer-B backbone, ADE20K, 160k iters, 512x512 crops.
# CrossFormer paper (ICLR 2022): 49.7 mIoU single-scale.
# Same recipe as CrossFormer-S; B is deeper (stage 3 has 18 blocks, same
# widths), so only the arch, stochastic depth and checkpoint change.
_base_ = './upernet_crossformer_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
