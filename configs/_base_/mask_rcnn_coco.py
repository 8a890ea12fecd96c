# Mask R-CNN + FPN on COCO with the detection schedule every family shares:
# mmdet's Mask R-CNN 1x (mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py), assembled
# from the same pieces, with AdamW instead of SGD (schedules/det_adamw_1x.py).
# Its ResNet-50 is removed: each config names its backbone and the FPN
# in_channels that follow from it.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True))
