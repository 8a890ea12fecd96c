# RetinaNet + FPN with a CloFormer-S backbone, COCO, 1x schedule.
# CloFormer (Fan et al., 2023) has no published detection result and no
# official dense recipe: this is the recipe PVT/PVTv2 use for lightweight
# pyramid backbones (AdamW lr 1e-4, wd 1e-4, 1x: the base's) on mmdet's
# RetinaNet 1x.
_base_ = './_base_/retinanet_coco.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CloFormer',
        arch='s',
        drop_path_rate=0.1,
        # No official ImageNet weights were released. Train CloFormer-S on
        # ImageNet-1k (the official qhfan/CloFormer code, or any trainer
        # producing the same keys) and put the file here: the backbone's
        # converter reads the official layout (weights under 'model', the
        # classifier's norm/head dropped). A training checkpoint that also
        # pickles its yacs config is refused by the safe loader: convert it
        # once with tools/model_converters/convert.py cloformer FILE
        # checkpoints/cloformer-s.pth --trust. To train from scratch instead,
        # set init_cfg=None (and expect a longer schedule to be needed).
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/cloformer-s.pth')),
    # CloFormer-S stage widths.
    neck=dict(in_channels=[64, 128, 224, 448]))
