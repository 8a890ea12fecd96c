# UperNet, CrossFormer-B, ADE20K 160k: the S recipe with the deeper B backbone
# (same widths) and its stochastic depth. Target: 49.7 mIoU single-scale.
_base_ = './upernet_crossformer_s_ade20k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
