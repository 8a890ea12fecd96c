"""The project's model registry.

A child of mmengine's root ``MODELS`` in its own scope, so that
``type='mmhybrid.CrossFormer'`` builds from mmdet configs, mmseg configs and plain
Python alike, without this package importing mmdet or mmseg.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmhybrid',
                  locations=['mmhybrid.models'])
