# FIXTURE: configs/retinanet_conv2former_t_coco.py as shipped before its fix. The FPN skips the
# stride-4 map (start_level=1) while out_norms puts a norm on it: that norm gets no gradient, and
# under DDP (find_unused_parameters=False) training stops at iteration 2. The gradient contract
# (tests/test_configs.py) and tools/misc/preflight.py must flag it.
# RetinaNet + FPN, Conv2Former-T, COCO 1x. No RetinaNet result was published
# (nor for ConvNeXt): ConvNeXt-T's dense recipe (drop path 0.4, AdamW lr 1e-4,
# wd 0.05, layer-wise lr decay 0.95, no decay on 1-D parameters) on mmdet's
# RetinaNet 1x. Backbone settings and weights: docs/models.md#conv2former.
_base_ = '../../../configs/_base_/retinanet_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.Conv2Former', arch='tiny', drop_path_rate=0.4, out_norms=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))

# AdamW wd 0.05 (lr 1e-4 and the 1x schedule from the base) with ConvNeXt-T's
# detection lr decay (layer-wise 0.95 over 6 layer ids) and no weight decay on
# 1-D parameters (norms, biases, layer scales).
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))
