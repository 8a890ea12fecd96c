# Mask R-CNN + FPN, CrossFormer++-B, COCO 1x: the S recipe with the B backbone (D = 96) and its
# stochastic depth. Target: 47.7 box AP / 43.2 mask AP (CrossFormer++ paper, Wang et al. 2023).
_base_ = './mask_rcnn_crossformer_pp_s_coco.py'

model = dict(
    backbone=dict(arch='pp_base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer_pp-b.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
