# Mask R-CNN + FPN with a Conformer-B/16 backbone, COCO, 1x schedule. The
# official code reports detection with S/32 only: this is its recipe
# (pengzhiliang/Conformer, mask_rcnn_conformer_small_patch32_fpn_1x_coco.py)
# with this size.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmhybrid.Conformer',
        arch='base',
        drop_path_rate=0.0,
        # BN statistics frozen and the ResNet stem (conv1, bn1) frozen, as the
        # official recipe (its frozen_stages=1 freezes only the stem; here
        # that is frozen_stages=0).
        norm_eval=True,
        frozen_stages=0,
        # The official ImageNet-1k file (Conformer_base_patch16.pth); the
        # backbone's converter accepts it directly.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/conformer-b.pth')),
    # CNN-branch widths C1, C2, C3, C3 (block 12 keeps C3).
    neck=dict(in_channels=[384, 768, 1536, 1536]))

# The official image size: 1344x800 (mmdet's default is 1333x800).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1344, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1344, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW lr 1e-4, wd 1e-4 on every parameter, for 16 images per iteration
# (8 GPUs x 2); 1x schedule (12 epochs, steps at 8 and 11, 500-iter warmup)
# from the base.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=16)
