# Quick start: RetinaNet + FPN with a CrossFormer backbone (the detector and
# backbone of configs/retinanet_crossformer_s_coco.py, at a quarter of the width)
# on the toy shapes dataset, trained from scratch on CPU in minutes.
_base_ = ['../_base_/models/retinanet.py', './_base_/toy_det.py', 'mmdet::retinanet/retinanet_tta.py']

model = dict(
    backbone=dict(
        type='mmhybrid.CrossFormer',
        arch=dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        drop_path_rate=0.0),  # from scratch: no init_cfg, no ImageNet weights needed
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    bbox_head=dict(num_classes=5, in_channels=64, feat_channels=64))
