# Mask R-CNN + FPN with a CvT-21 backbone, COCO, 1x schedule.
# The CvT-13 config's recipe with CvT-21 (same widths: the heads are unchanged).
_base_ = './mask_rcnn_cvt_13_coco.py'

model = dict(
    backbone=dict(
        arch='21',
        # the official ImageNet-1k file CvT-21-224x224-IN-1k.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-21.pth')))
