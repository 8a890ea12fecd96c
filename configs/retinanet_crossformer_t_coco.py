# RetinaNet + FPN, CrossFormer-T, COCO 1x: the S recipe with stochastic depth
# 0.1 (no official T dense config; the official rates grow with size).
_base_ = './retinanet_crossformer_s_coco.py'

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1, init_cfg=dict(checkpoint='checkpoints/crossformer-t.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
