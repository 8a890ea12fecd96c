# Mask R-CNN + FPN on COCO, 3x with multi-scale crop training (the Swin / ConvNeXt
# Mask R-CNN 3x recipe's data and schedule): models/mask_rcnn.py with
# datasets/coco_instance_ms_crop.py and schedules/det_adamw_3x.py.
_base_ = [
    './models/mask_rcnn.py',
    './datasets/coco_instance_ms_crop.py',
    './schedules/det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]
