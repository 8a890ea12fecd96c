# Cascade Mask R-CNN + FPN on COCO as the Swin and ConvNeXt papers train it (and the
# CrossFormer and Conv2Former papers compare with): 3x with multi-scale crop training
# (datasets/coco_instance_ms_crop.py, schedules/det_adamw_3x.py) and three box heads of
# 4 shared convs + 1 fc with SyncBN, regressing decoded boxes with GIoU loss (weight 10),
# the "giou_4conv1f" heads of their configs. mmdet's Cascade Mask R-CNN otherwise
# (models/cascade_mask_rcnn.py, no backbone); AdamW lr 1e-4, wd 1e-4 until a config
# sets its family's optimizer.
_base_ = [
    './models/cascade_mask_rcnn.py',
    './datasets/coco_instance_ms_crop.py',
    './schedules/det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]

# One head per stage; the stages differ only in the box-delta scale they expect.
model = dict(roi_head=dict(bbox_head=[
    dict(type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256,
         conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80,
         bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
         reg_class_agnostic=False, reg_decoded_bbox=True, norm_cfg=dict(type='SyncBN', requires_grad=True),
         loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
         loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
    for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
]))
