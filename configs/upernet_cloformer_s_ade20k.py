# UperNet with a CloFormer-S backbone, ADE20K, 160k iters, 512x512 crops.
# CloFormer (Fan et al., 2023) has no published segmentation result and no
# official dense recipe: this is Swin's UperNet recipe (AdamW lr 6e-5,
# wd 0.01, no decay on the backbone's norms, 1500-iter warmup, poly).
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
    # CloFormer-S stage widths; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[64, 128, 224, 448], num_classes=150),
    auxiliary_head=dict(in_channels=224, num_classes=150))

# AdamW lr 6e-5, wd 0.01 for 16 images per iteration (8 GPUs x 2). No weight
# decay on the backbone's normalisation layers: the GroupNorms (norm1, norm2,
# patch_embed.layernorm, all named '*norm*') and the BatchNorms of the stem
# (patch_embed.convK.conv.1) and of the downsampling shortcuts
# (downsample.1). The heads keep their decay.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            '.conv.1.': dict(decay_mult=0.),
            '.downsample.1.': dict(decay_mult=0.),
        }))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]

train_dataloader = dict(batch_size=2)
