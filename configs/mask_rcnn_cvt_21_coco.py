# The recipe of mask_rcnn_cvt_13_coco.py with CvT-21 (same widths: the heads are unchanged).
_base_ = './mask_rcnn_cvt_13_coco.py'

model = dict(backbone=dict(arch='21', init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-21.pth')))
