# Cascade Mask R-CNN + FPN, CrossFormer-B, COCO 3x: the S recipe with the deeper B backbone
# (same widths) and its stochastic depth. Target: none published (the official results list
# Cascade Mask R-CNN for S only).
_base_ = './cascade_mask_rcnn_crossformer_s_coco.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
