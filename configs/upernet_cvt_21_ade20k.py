# UperNet with a CvT-21 backbone, ADE20K, 160k iters, 512x512 crops.
# The CvT-13 config's recipe with CvT-21 (same widths: the heads are unchanged).
_base_ = './upernet_cvt_13_ade20k.py'

model = dict(
    backbone=dict(
        arch='21',
        # the official ImageNet-1k file CvT-21-224x224-IN-1k.pth
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-21.pth')))
