"""mmhybrid: hybrid CNN/Transformer backbones for dense prediction.

``import mmhybrid`` registers the backbones (scope ``mmhybrid``) and the layer-decay
optimizer constructor for mmdet/mmseg configs; ``import mmhybrid.timm_models``
additionally registers every variant as a timm model (needs timm). Importing the
package also makes mmengine read every checkpoint (``load_from``, ``resume``,
``init_cfg``) through mmhybrid's weights-only loader
(:func:`mmhybrid.checkpoints.load_checkpoint_file`).
"""
from .version import __version__
from .registry import MODELS
from . import models  # noqa: F401  (registers the backbones)
from . import engine  # noqa: F401  (registers the optimizer constructor)
from .checkpoints import install_safe_checkpoint_loaders

# every checkpoint mmengine reads (load_from, resume, Pretrained init) goes through
# mmhybrid's weights-only loader
install_safe_checkpoint_loaders()

__all__ = ['__version__', 'MODELS']
