# Mask R-CNN + FPN with a CrossFormer-B backbone, COCO, 1x schedule.
# CrossFormer paper (ICLR 2022): 47.2 box AP / 42.7 mask AP on COCO val2017.
# Same recipe as CrossFormer-S; B is deeper (stage 3 has 18 blocks, same
# widths), so only the arch, stochastic depth and checkpoint change.
_base_ = './mask_rcnn_crossformer_s_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b.pth')))
