# RetinaNet + FPN with a CrossFormer-T backbone, COCO, 1x schedule.
# The official repository ships no dense config for T: T reuses the S recipe
# with stochastic depth 0.1 (our choice: T is the smallest model, and the
# official dense rates grow with size, S 0.2 / B 0.3 / L 0.5).
_base_ = './retinanet_crossformer_s_coco.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/crossformer-t.pth')),
    # Stage widths D, 2D, 4D, 8D with D = 64.
    neck=dict(in_channels=[64, 128, 256, 512]))
