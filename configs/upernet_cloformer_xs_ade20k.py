# The recipe of upernet_cloformer_s_ade20k.py with CloFormer-XS (no published result).
_base_ = './upernet_cloformer_s_ade20k.py'

model = dict(backbone=dict(arch='xs', init_cfg=dict(checkpoint='checkpoints/cloformer-xs.pth')),
             decode_head=dict(in_channels=[48, 96, 160, 352]), auxiliary_head=dict(in_channels=160))
