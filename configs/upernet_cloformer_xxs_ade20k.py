# The recipe of upernet_cloformer_s_ade20k.py with CloFormer-XXS (no published result).
_base_ = './upernet_cloformer_s_ade20k.py'

model = dict(backbone=dict(arch='xxs', init_cfg=dict(checkpoint='checkpoints/cloformer-xxs.pth')),
             decode_head=dict(in_channels=[32, 64, 128, 256]), auxiliary_head=dict(in_channels=128))
