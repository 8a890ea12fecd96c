# mmdet's RetinaNet + FPN (_base_/models/retinanet_r50_fpn.py) with its ResNet-50
# removed: a config names its backbone and the FPN in_channels that follow from it.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True))
