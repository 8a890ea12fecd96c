# Mask R-CNN + FPN on COCO with the detection schedule every family shares:
# mmdet's Mask R-CNN 1x (mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py), assembled
# from the same pieces, with AdamW instead of SGD (schedules/det_adamw_1x.py)
# and no backbone (models/mask_rcnn.py).
_base_ = [
    './models/mask_rcnn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
