# RetinaNet + FPN with a CloFormer-XXS backbone, COCO, 1x schedule: the
# recipe of retinanet_cloformer_s_coco.py with the XXS backbone (no published
# result exists for any CloFormer detector).
_base_ = './retinanet_cloformer_s_coco.py'

model = dict(
    backbone=dict(
        arch='xxs',
        # ImageNet-1k weights you trained (none were released); see the S config.
        init_cfg=dict(checkpoint='checkpoints/cloformer-xxs.pth')),
    # CloFormer-XXS stage widths.
    neck=dict(in_channels=[32, 64, 128, 256]))
