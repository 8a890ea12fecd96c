# UperNet, Conv2Former-T, ADE20K 160k, 512x512 crops. Target: 48.0 mIoU
# (Conv2Former, TPAMI 2024). No dense code was released; the paper follows
# ConvNeXt, so this is ConvNeXt-T's UperNet recipe (drop path 0.4, AdamW lr 1e-4,
# wd 0.05, sliding-window test with 512 crops, stride 341). Backbone settings and
# weights: docs/models.md#conv2former.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(type='mmhybrid.Conv2Former', arch='tiny', drop_path_rate=0.4, out_norms=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# AdamW lr 1e-4, wd 0.05 (instead of the base's 6e-5, 0.01), with ConvNeXt-T's
# stage-wise lr decay (0.9, 6 layer ids; mmseg's own constructor only accepts
# classes named ConvNeXt, so mmhybrid has one that asks the backbone for its
# layer ids). As in ConvNeXt, 1-D parameters (norms, biases, layer scales) get
# no weight decay. ConvNeXt trains in fp16: add --amp to tools/train.py on a
# GPU.
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))
