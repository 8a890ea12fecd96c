# Semantic FPN, CrossFormer-L, ADE20K 80k: the S recipe with the L backbone (D = 128) and,
# as the official L config, groups of 14 in the first two stages with LDA intervals
# (16, 8, 2, 1). Target: 49.1 mIoU single-scale (official README).
_base_ = './fpn_crossformer_s_ade20k.py'

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5, group_size=(14, 14, 7, 7), interval=(16, 8, 2, 1),
                  init_cfg=dict(checkpoint='checkpoints/crossformer-l.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
