# Quick start: Mask R-CNN + FPN with a CrossFormer backbone (the detector and
# backbone of configs/mask_rcnn_crossformer_s_coco.py, at a quarter of the width)
# on the toy shapes dataset, trained from scratch on CPU.
_base_ = ['../_base_/models/mask_rcnn.py', './_base_/toy_det.py']

width = 64
model = dict(
    backbone=dict(
        type='mmhybrid.CrossFormer',
        arch=dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        drop_path_rate=0.0),  # from scratch: no init_cfg, no ImageNet weights needed
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=5),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=5)),
    # proposals and sampled RoIs sized to 160 px scenes of about 6 objects
    # (COCO's 2000 proposals and 512 RoIs per image make CPU steps 4x slower)
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))

# The base's pipelines, loading the masks as well.
train_pipeline = [_base_.train_pipeline[0], dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  *_base_.train_pipeline[2:]]
test_pipeline = [*_base_.test_pipeline[:2], dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                 _base_.test_pipeline[3]]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
