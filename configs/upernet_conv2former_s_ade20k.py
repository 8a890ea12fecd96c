# UperNet, Conv2Former-S, ADE20K 160k: the T recipe with ConvNeXt-S's UperNet settings
# (drop path 0.3, stage-wise lr decay 0.9 with num_layers 12); same widths as T.
# Target: none known to this project (the official repository lists no dense results).
_base_ = './upernet_conv2former_t_ade20k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3, init_cfg=dict(checkpoint='checkpoints/conv2former-s.pth')))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
