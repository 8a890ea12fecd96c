# Semantic FPN on ADE20K (150 classes, 512x512 crops) with the 80k schedule of
# schedules/seg_adamw_80k.py and mmseg's batch of 4 crops per GPU (16 images per
# iteration on 4 GPUs, as the PVT / CrossFormer recipe). No backbone (models/fpn.py):
# each config names its backbone and the FPN in_channels that follow from it.
_base_ = [
    './models/fpn.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './schedules/seg_adamw_80k.py',
]

# every training crop padded to 512x512, the ADE20K base's crop_size
model = dict(data_preprocessor=dict(size=(512, 512)), decode_head=dict(num_classes=150))
