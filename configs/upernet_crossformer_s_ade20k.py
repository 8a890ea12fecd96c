# UperNet with a CrossFormer-S backbone, ADE20K, 160k iters, 512x512 crops.
# CrossFormer paper (ICLR 2022): 47.6 mIoU single-scale. Recipe (AdamW lr
# 6e-5, wd 0.01, warmup 1500 + poly, batch 16) from the base.
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(
        type='mmhybrid.CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        # The official ImageNet-1k file, as downloaded (weights under 'model');
        # the backbone's converter accepts it directly, no conversion step.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')),
    # CrossFormer stage widths D, 2D, 4D, 8D with D = 96; the auxiliary
    # head reads stage 3 (4D).
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# No weight decay on parameters named 'norm' (norm1/norm2, patch_embed.norm,
# downsample.norm), exactly as in the official recipe. The small LayerNorms
# inside the position-bias MLPs (attn.pos.pos1.0, ...) keep their decay there
# too; add 'pos1.0'/'pos2.0'/'pos3.0' keys to exempt them.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
