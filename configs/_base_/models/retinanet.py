# mmdet's RetinaNet + FPN (_base_/models/retinanet_r50_fpn.py) with its ResNet-50
# removed: a config names its backbone and the FPN in_channels that follow from it.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# mmcv's NMS, RoIAlign and sigmoid focal loss have no bfloat16 kernels: mmhybrid's versions of
# the heads that call them run them in float32 under autocast (tools/train.py --amp; mmhybrid/ops.py)
model = dict(backbone=dict(_delete_=True),
             bbox_head=dict(loss_cls=dict(type='mmhybrid.FP32FocalLoss')))
