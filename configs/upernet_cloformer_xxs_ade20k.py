# UperNet with a CloFormer-XXS backbone, ADE20K, 160k iters, 512x512 crops:
# the recipe of upernet_cloformer_s_ade20k.py with the XXS backbone (no
# published result exists for any CloFormer segmentor).
_base_ = './upernet_cloformer_s_ade20k.py'

model = dict(
    backbone=dict(
        arch='xxs',
        # ImageNet-1k weights you trained (none were released); see the S config.
        init_cfg=dict(checkpoint='checkpoints/cloformer-xxs.pth')),
    # CloFormer-XXS stage widths; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[32, 64, 128, 256]),
    auxiliary_head=dict(in_channels=128))
