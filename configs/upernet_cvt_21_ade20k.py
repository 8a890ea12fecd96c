# The recipe of upernet_cvt_13_ade20k.py with CvT-21 (same widths: the heads are unchanged).
_base_ = './upernet_cvt_13_ade20k.py'

model = dict(backbone=dict(arch='21', init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-21.pth')))
