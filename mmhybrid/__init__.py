"""mmhybrid: hybrid CNN/Transformer backbones for dense prediction."""
from .version import __version__
from .registry import MODELS
from . import models  # noqa: F401  (registers the backbones)
from . import engine  # noqa: F401  (registers the optimizer constructor)

__all__ = ['__version__', 'MODELS']
