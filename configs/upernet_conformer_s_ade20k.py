# UperNet, Conformer-S/32, ADE20K 160k, 512x512 crops. No official segmentation
# recipe: Swin's UperNet recipe (AdamW lr 6e-5, wd 0.01: the base's) with the
# backbone settings of the official detection recipe (frozen BN statistics, no
# stochastic depth). Backbone settings and weights: docs/models.md#conformer.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.Conformer', arch='small_p32', drop_path_rate=0.0, norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conformer-s.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 1024]),
    auxiliary_head=dict(in_channels=1024))  # stage 3

# No weight decay on the class token and on every norm of the backbone (the
# BatchNorms of both CNN bottlenecks, the stem and FCUUp, the LayerNorms of
# FCUDown and the transformer blocks); the heads keep their decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            key: dict(decay_mult=0.)
            for key in ('backbone.cls_token', 'backbone.bn1.', 'residual_bn', 'cnn_block.bn', 'fusion_block.bn',
                        'expand_block.bn', 'squeeze_block.ln', 'trans_block.norm')
        }))
