# UperNet, Conv2Former-B, ADE20K 160k: the T recipe with ConvNeXt-B's UperNet settings
# (drop path 0.4, stage-wise lr decay 0.9 with num_layers 12) and B's widths (96-768).
# Target: none known to this project (the official repository lists no dense results).
_base_ = './upernet_conv2former_t_ade20k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.4, init_cfg=dict(checkpoint='checkpoints/conv2former-b.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
