"""Official-checkpoint converters: pure functions, one per family."""
from .common import (CheckpointMismatchError, check_state_dict, load_state_dict_checked, strip_prefix,
                     unwrap_state_dict)
from .cloformer import convert_cloformer
from .conformer import convert_conformer
from .conv2former import convert_conv2former
from .crossformer import convert_crossformer
from .cvt import convert_cvt

#: family name -> converter
CONVERTERS = {
    'cloformer': convert_cloformer,
    'conformer': convert_conformer,
    'conv2former': convert_conv2former,
    'crossformer': convert_crossformer,
    'cvt': convert_cvt,
}

__all__ = [
    'CONVERTERS', 'CheckpointMismatchError', 'check_state_dict', 'convert_cloformer', 'convert_conformer', 'convert_conv2former',
    'convert_crossformer', 'convert_cvt', 'load_state_dict_checked', 'strip_prefix',
    'unwrap_state_dict'
]
