"""Official-checkpoint converters: pure functions official state dict -> project state dict, one per family
(each family class names its own in ``converter``)."""
from .cloformer import convert_cloformer
from .conformer import convert_conformer
from .conv2former import convert_conv2former
from .crossformer import convert_crossformer
from .crossformer_pp import convert_crossformer_pp
from .cvt import convert_cvt

__all__ = ['convert_cloformer', 'convert_conformer', 'convert_conv2former', 'convert_crossformer',
           'convert_crossformer_pp', 'convert_cvt']
