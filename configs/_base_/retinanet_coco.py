# RetinaNet + FPN on COCO with the detection schedule every family shares:
# mmdet's RetinaNet 1x (retinanet/retinanet_r50_fpn_1x_coco.py), assembled
# from the same pieces, with AdamW instead of SGD (schedules/det_adamw_1x.py)
# and no backbone (models/retinanet.py).
_base_ = [
    './models/retinanet.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
    'mmdet::retinanet/retinanet_tta.py',
]
