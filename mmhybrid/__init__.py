"""mmhybrid: hybrid CNN/Transformer backbones for dense prediction.

``import mmhybrid`` registers the backbones (scope ``mmhybrid``) and the layer-decay
optimizer constructor for mmdet/mmseg configs; ``import mmhybrid.timm_models``
additionally registers every variant as a timm model (needs timm).
"""
from .version import __version__
from .registry import MODELS
from . import models  # noqa: F401  (registers the backbones)
from . import engine  # noqa: F401  (registers the optimizer constructor)

__all__ = ['__version__', 'MODELS']
