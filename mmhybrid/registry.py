"""The project's registries.

Children of mmengine's root registries in their own scope, so that
``type='mmhybrid.CrossFormer'`` (and
``constructor='mmhybrid.LayerDecayOptimizerConstructor'``) build from mmdet configs,
mmseg configs and plain Python alike, without this package importing mmdet or mmseg.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmhybrid',
                  locations=['mmhybrid.models'])

OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mmhybrid', locations=['mmhybrid.engine'])
