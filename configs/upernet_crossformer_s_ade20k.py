# UperNet with a CrossFormer-S backbone, ADE20K, 160k iters, 512x512 crops.
# CrossFormer paper (ICLR 2022): 47.6 mIoU single-scale.
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
        type='mmhybrid.CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        # The official ImageNet-1k file, as downloaded (weights under 'model');
        # the backbone's converter accepts it directly, no conversion step.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    # CrossFormer stage widths D, 2D, 4D, 8D with D = 96; the auxiliary
    # head reads stage 3 (4D).
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# AdamW lr 6e-5, wd 0.01 for 16 images per iteration (8 GPUs x 2), no weight
# decay on parameters named 'norm' (norm1/norm2, patch_embed.norm,
# downsample.norm), exactly as in the official recipe. The small LayerNorms
# inside the position-bias MLPs (attn.pos.pos1.0, ...) keep their decay there
# too; add 'pos1.0'/'pos2.0'/'pos3.0' keys to exempt them.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={'norm': dict(decay_mult=0.)}))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]

train_dataloader = dict(batch_size=2)
