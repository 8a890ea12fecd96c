# Mask R-CNN + FPN with a CrossFormer-S backbone, COCO, 1x schedule.
# CrossFormer paper (ICLR 2022): 45.4 box AP / 41.4 mask AP on COCO val2017.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmhybrid.CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        # The official ImageNet-1k file, as downloaded (weights under 'model');
        # the backbone's converter accepts it directly, no conversion step.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    # CrossFormer stage widths D, 2D, 4D, 8D with D = 96.
    neck=dict(in_channels=[96, 192, 384, 768]))

# AdamW lr 1e-4, wd 1e-4 for 16 images per iteration (8 GPUs x 2);
# 1x schedule (12 epochs, steps at 8 and 11, 500-iter warmup) from the base.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=16)
