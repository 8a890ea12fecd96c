# mmseg's Semantic FPN (_base_/models/fpn_r50.py) with its ResNet-50 and checkpoint removed:
# a config names its backbone and the FPN in_channels that follow from it.
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

model = dict(pretrained=None, backbone=dict(_delete_=True))
