# UperNet, CvT-13, ADE20K 160k, 512x512 crops. No dense result was published
# for CvT: mmseg's Swin-T UperNet recipe (AdamW lr 6e-5, wd 0.01, warmup 1500,
# poly: the base's) with the official CvT no-decay rule, batch 16. Backbone
# settings and weights: docs/models.md#cvt.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.CvT', arch='13', drop_path_rate=0.1, extra_stage=True, norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-13.pth')),
    decode_head=dict(in_channels=[64, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))  # the last official stage

# No weight decay on norms (heads' included), biases and the class token.
optim_wrapper = dict(
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'cls_token': dict(decay_mult=0.)}))
