# Mask R-CNN + FPN, CrossFormer-B, COCO 1x: the S recipe with the deeper B backbone (same
# widths) and its stochastic depth. Target: 47.2 box AP / 42.7 mask AP (CrossFormer, ICLR 2022).
_base_ = './mask_rcnn_crossformer_s_coco.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
