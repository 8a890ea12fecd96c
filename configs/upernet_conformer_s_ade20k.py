# UperNet with a Conformer-S/32 backbone, ADE20K, 160k iters, 512x512 crops.
# The official code has no segmentation recipe: this is the Swin/CrossFormer
# UperNet recipe (AdamW lr 6e-5, wd 0.01: the base's; no decay on norms and
# the class token) with the backbone settings of the official detection recipe
# (frozen BN statistics: 2 images per GPU are too few to train them, no
# stochastic depth).
_base_ = './_base_/upernet_ade20k.py'

model = dict(
    backbone=dict(
        type='mmhybrid.Conformer',
        arch='small_p32',
        drop_path_rate=0.0,
        norm_eval=True,
        # The official ImageNet-1k file (Conformer_small_patch32.pth); the
        # backbone's converter accepts it directly.
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/conformer-s.pth')),
    # CNN-branch widths C1, C2, C3, C3; the auxiliary head reads stage 3.
    decode_head=dict(in_channels=[256, 512, 1024, 1024]),
    auxiliary_head=dict(in_channels=1024))

# No weight decay on the class token (the official classification recipe
# exempts it too) and on every norm of the backbone (BatchNorms of both CNN
# bottlenecks, the stem and FCUUp, LayerNorms of FCUDown and the transformer
# blocks); the heads keep their decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            key: dict(decay_mult=0.)
            for key in ('backbone.cls_token', 'backbone.bn1.', 'conv_1.bn',
                        'residual_bn', 'cnn_block.bn', 'fusion_block.bn',
                        'expand_block.bn', 'squeeze_block.ln', 'trans_1.norm',
                        'trans_block.norm')
        }))
