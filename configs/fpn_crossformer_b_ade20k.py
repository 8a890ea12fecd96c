# Semantic FPN, CrossFormer-B, ADE20K 80k: the S recipe with the deeper B backbone (same
# widths) and its stochastic depth. Target: 48.0 mIoU single-scale (official README).
_base_ = './fpn_crossformer_s_ade20k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
