# RetinaNet + FPN with a CvT-13 backbone, COCO, 1x schedule.
# No dense-prediction result has been published for CvT, so there is no number
# to reproduce: this is the recipe used here, the optimizer of mmdet's Swin-T
# Mask R-CNN 1x (AdamW lr 1e-4, wd 0.05) with the official CvT no-decay rule
# (BatchNorm, LayerNorm, biases and the class token), single-scale 1333x800,
# batch 16, 1x.
_base_ = './_base_/retinanet_coco.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CvT',
        arch='13',
        # official ImageNet setting: a linear ramp to 0.1 in the last stage only
        drop_path_rate=0.1,
        # stride-32 level: one CvT token embedding (3x3 conv s2 + LayerNorm,
        # 384 -> 768) after the three official stages; new, not in the file
        extra_stage=True,
        # BatchNorms of the attention projections keep the ImageNet statistics
        # (2 images per GPU give poor batch statistics)
        norm_eval=True,
        # The official ImageNet-1k file CvT-13-224x224-IN-1k.pth (a plain
        # state dict), renamed; the converter accepts it as downloaded.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-13.pth')),
    # CvT-13 widths 64, 192, 384 and the stride-32 level's 768; RetinaNet
    # reads strides 8-32 (start_level=1) and adds P6/P7 from the 768 map.
    neck=dict(in_channels=[64, 192, 384, 768]))

# AdamW wd 0.05 (lr 1e-4 and the 1x schedule from the base); no weight decay
# on norms (BatchNorm and LayerNorm), biases and the class token, the rule of
# the official CvT training code.
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'cls_token': dict(decay_mult=0.)}))
