# UperNet with a Conformer-S/32 backbone, ADE20K, 160k iters, 512x512 crops.
# The official code has no segmentation recipe: this is the Swin/CrossFormer
# UperNet recipe (AdamW lr 6e-5, wd 0.01, no decay on norms and the class
# token) with the backbone settings of the official detection recipe (frozen
# BN statistics: 2 images per GPU are too few to train them, no stochastic
# depth).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    pretrained=None,  # the base names a ResNet checkpoint here
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='mmhybrid.Conformer',
        arch='small_p32',
        drop_path_rate=0.0,
        norm_eval=True,
        # The official ImageNet-1k file (Conformer_small_patch32.pth); the
        # backbone's converter accepts it directly.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/conformer-s.pth')),
    # CNN-branch widths C1, C2, C3, C3; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[256, 512, 1024, 1024], num_classes=150),
    auxiliary_head=dict(in_channels=1024, num_classes=150))

# AdamW lr 6e-5, wd 0.01 for 16 images per iteration (8 GPUs x 2); no weight
# decay on the class token (the official classification recipe exempts it
# too) and on every norm of the backbone (BatchNorms of both CNN bottlenecks,
# the stem and FCUUp, LayerNorms of FCUDown and the transformer blocks); the
# heads keep their decay.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            key: dict(decay_mult=0.)
            for key in ('backbone.cls_token', 'backbone.bn1.', 'conv_1.bn',
                        'residual_bn', 'cnn_block.bn', 'fusion_block.bn',
                        'expand_block.bn', 'squeeze_block.ln', 'trans_1.norm',
                        'trans_block.norm')
        }))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]

train_dataloader = dict(batch_size=2)
