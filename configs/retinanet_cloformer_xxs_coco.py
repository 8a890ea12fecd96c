# The recipe of retinanet_cloformer_s_coco.py with CloFormer-XXS (no published result).
_base_ = './retinanet_cloformer_s_coco.py'

model = dict(backbone=dict(arch='xxs', init_cfg=dict(checkpoint='checkpoints/cloformer-xxs.pth')),
             neck=dict(in_channels=[32, 64, 128, 256]))
