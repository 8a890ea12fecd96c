# Quick start: RetinaNet + FPN with a CrossFormer backbone (the detector and
# backbone of configs/retinanet_crossformer_s_coco.py, at a quarter of the width)
# on the toy shapes dataset, trained from scratch on CPU in minutes.
_base_ = ['../_base_/models/retinanet.py', './_base_/toy_det.py', 'mmdet::retinanet/retinanet_tta.py']

model = dict(
    backbone=dict(
        type='mmhybrid.CrossFormer',
        arch=dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        drop_path_rate=0.0),  # from scratch: no init_cfg, no ImageNet weights needed
    # P3-P5 only: P6/P7 (strides 64/128) see nothing new in 160 px scenes of 18-64 px objects
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64, num_outs=3),
    bbox_head=dict(
        # two convolutions per branch instead of four: cheaper steps, and better on 1200 images
        num_classes=5, in_channels=64, feat_channels=64, stacked_convs=2,
        # anchors of 24-152 px (3 scales per octave from 3 x stride) for the 18-64 px shapes
        anchor_generator=dict(octave_base_scale=3, strides=[8, 16, 32]),
        # GIoU on decoded boxes: better boxes at high IoU than L1 on deltas (mAP 0.50:0.95)
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='GIoULoss', loss_weight=2.0)))

# The shapes lie at any angle and either handedness: every flip and quarter turn of a scene
# is another valid scene (the base's pipeline with flips in all three directions, then
# a quarter turn either way for half the images; exact on the square 160 px images).
train_pipeline = [
    *_base_.train_pipeline[:3],
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25], direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='Rotate', prob=0.5, min_mag=90.0, max_mag=90.0, reversal_prob=0.5),
    _base_.train_pipeline[-1],
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# 18 epochs at twice the base's learning rate: what fits in 10 minutes on 2 CPU cores
# (run times and results: docs/benchmarks.md)
max_epochs = 18
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=300),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=0.01, convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(interval=100))
