# RetinaNet + FPN with a CloFormer-XS backbone, COCO, 1x schedule: the
# recipe of retinanet_cloformer_s_coco.py with the XS backbone (no published
# result exists for any CloFormer detector).
_base_ = './retinanet_cloformer_s_coco.py'

model = dict(
    backbone=dict(
        arch='xs',
        # ImageNet-1k weights you trained (none were released); see the S config.
        init_cfg=dict(checkpoint='checkpoints/cloformer-xs.pth')),
    # CloFormer-XS stage widths.
    neck=dict(in_channels=[48, 96, 160, 352]))
