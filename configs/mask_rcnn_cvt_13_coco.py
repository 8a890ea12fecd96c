# Mask R-CNN + FPN, CvT-13, COCO 1x. No dense result was published for CvT: the
# optimizer of mmdet's Swin-T Mask R-CNN 1x (AdamW lr 1e-4, wd 0.05) with the
# official CvT no-decay rule, 1333x800, batch 16. Backbone settings (the added
# stride-32 level, frozen BN statistics) and weights: docs/models.md#cvt.
_base_ = './_base_/mask_rcnn_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.CvT', arch='13', drop_path_rate=0.1, extra_stage=True, norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-13.pth')),
    neck=dict(in_channels=[64, 192, 384, 768]))

# No weight decay on norms (BatchNorm and LayerNorm), biases and the class token.
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'cls_token': dict(decay_mult=0.)}))
