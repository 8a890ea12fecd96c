"""The project's registries.

Children of mmengine's root registries in their own scope, so that
``type='mmhybrid.CrossFormer'`` (and
``constructor='mmhybrid.LayerDecayOptimizerConstructor'``,
``type='mmhybrid.MixedPrecisionOptimWrapper'`` in ``optim_wrapper``) build from mmdet configs,
mmseg configs and plain Python alike, without this package importing mmdet or mmseg.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

# mmhybrid.engine.fp32_ops (mmdet heads that run mmcv ops in float32 under autocast) and
# mmhybrid.deploy.runtime (exported files run by ONNX Runtime, for tools/test.py) are imported
# when a config first builds a ``mmhybrid.`` type, not by ``import mmhybrid``
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmhybrid',
                  locations=['mmhybrid.models', 'mmhybrid.engine.fp32_ops', 'mmhybrid.deploy.runtime'])

OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mmhybrid', locations=['mmhybrid.engine'])

OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          scope='mmhybrid', locations=['mmhybrid.engine'])
