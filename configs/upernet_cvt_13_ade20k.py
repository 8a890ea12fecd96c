# UperNet with a CvT-13 backbone, ADE20K, 160k iters, 512x512 crops.
# No dense-prediction result has been published for CvT, so there is no number
# to reproduce: this is the recipe used here, mmseg's Swin-T UperNet recipe
# (AdamW lr 6e-5, wd 0.01, warmup 1500, poly) with the official CvT no-decay
# rule (BatchNorm, LayerNorm, biases and the class token), batch 16.
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
        type='mmhybrid.CvT',
        arch='13',
        # official ImageNet setting: a linear ramp to 0.1 in the last stage only
        drop_path_rate=0.1,
        # stride-32 level: one CvT token embedding (3x3 conv s2 + LayerNorm,
        # 384 -> 768) after the three official stages; new, not in the file
        extra_stage=True,
        # BatchNorms of the attention projections keep the ImageNet statistics
        # (2 crops per GPU give poor batch statistics)
        norm_eval=True,
        # The official ImageNet-1k file CvT-13-224x224-IN-1k.pth (a plain
        # state dict), renamed; the converter accepts it as downloaded.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cvt-13.pth')),
    # CvT-13 widths 64, 192, 384 and the stride-32 level's 768 (pyramid
    # pooling on it); the auxiliary head reads the last official stage (384).
    decode_head=dict(in_channels=[64, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# AdamW lr 6e-5, wd 0.01 for 16 images per iteration (8 GPUs x 2); no weight
# decay on norms (BatchNorm and LayerNorm, heads included), biases and the
# class token, the rule of the official CvT training code.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'cls_token': dict(decay_mult=0.)}))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]

train_dataloader = dict(batch_size=2)
