# UperNet with a Conv2Former-T backbone, ADE20K, 160k iters, 512x512 crops.
# Conv2Former paper (TPAMI 2024): 48.0 mIoU. Its dense code is not released;
# the paper follows ConvNeXt, so this is ConvNeXt-T's UperNet recipe
# (facebookresearch/ConvNeXt semantic_segmentation/configs/convnext: drop path
# 0.4, AdamW lr 1e-4, wd 0.05, sliding-window test with 512 crops, stride 341).
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
        type='mmhybrid.Conv2Former',
        arch='tiny',
        drop_path_rate=0.4,
        # a LayerNorm on every output, as ConvNeXt's dense backbone has (new
        # layers: the ImageNet file has no weights for them)
        out_norms=True,
        # The official ImageNet-1k file. A file that also pickles timm's
        # training arguments is refused by the safe loader: convert it once with
        # tools/model_converters/convert.py conv2former FILE
        # checkpoints/conv2former-t.pth --trust
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/conv2former-t.pth')),
    # Conv2Former-T stage widths; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[72, 144, 288, 576], num_classes=150),
    auxiliary_head=dict(in_channels=288, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# AdamW lr 1e-4, wd 0.05 for 16 images per iteration (8 GPUs x 2), with
# ConvNeXt-T's stage-wise lr decay (0.9, 6 layer ids; mmseg's own constructor
# only accepts classes named ConvNeXt, so mmhybrid has one that asks the
# backbone for its layer ids). As in ConvNeXt, 1-D parameters (norms, biases,
# layer scales) get no weight decay. ConvNeXt trains in fp16: add --amp to
# tools/train.py on a GPU.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmhybrid.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))

# Linear warmup over 1500 iterations, then poly decay (power 1) to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500,
         end=160000),
]

train_dataloader = dict(batch_size=2)
