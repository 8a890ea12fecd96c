# RetinaNet + FPN, CrossFormer++-S, COCO 1x (AdamW lr 1e-4, wd 1e-4: the base's), with the official
# ++ dense settings G = 7, I = (8, 4, 2, 1). Target: 45.1 box AP on val2017 (CrossFormer++ paper, Wang et al. 2023).
# Backbone settings and weights: docs/models.md, CrossFormer++.
_base_ = './_base_/retinanet_coco.py'

model = dict(
    backbone=dict(type='mmhybrid.CrossFormerPP', arch='pp_small', group_size=7, interval=(8, 4, 2, 1),
                  drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint='checkpoints/crossformer_pp-s.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
