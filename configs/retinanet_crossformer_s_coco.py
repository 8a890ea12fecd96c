# RetinaNet + FPN with a CrossFormer-S backbone, COCO, 1x schedule.
# CrossFormer paper (ICLR 2022): 44.4 box AP on COCO val2017. Recipe (AdamW
# lr 1e-4, wd 1e-4, 1x) from the base.
_base_ = './_base_/retinanet_coco.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        # The official ImageNet-1k file, as downloaded (weights under 'model');
        # the backbone's converter accepts it directly, no conversion step.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    # CrossFormer stage widths D, 2D, 4D, 8D with D = 96.
    neck=dict(in_channels=[96, 192, 384, 768]))
