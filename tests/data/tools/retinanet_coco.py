# mmdet's RetinaNet on COCO, unchanged: the tools tests point its data elsewhere.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
