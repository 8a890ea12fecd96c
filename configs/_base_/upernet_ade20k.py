# UperNet on ADE20K (150 classes, 512x512 crops) with the segmentation
# schedule every family shares (schedules/seg_adamw_160k.py), 2 crops per GPU.
# mmseg's ResNet-50 is removed: each config names its backbone and the
# decode/auxiliary head in_channels that follow from it (the auxiliary head
# reads stage 3).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './schedules/seg_adamw_160k.py',
]

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    pretrained=None,  # the base names a ResNet checkpoint here
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# 16 images per iteration: 8 GPUs x 2.
train_dataloader = dict(batch_size=2)
