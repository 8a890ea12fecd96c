# The recipe of retinanet_cloformer_s_coco.py with CloFormer-XS (no published result).
_base_ = './retinanet_cloformer_s_coco.py'

model = dict(backbone=dict(arch='xs', init_cfg=dict(checkpoint='checkpoints/cloformer-xs.pth')),
             neck=dict(in_channels=[48, 96, 160, 352]))
