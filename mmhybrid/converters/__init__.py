"""Official-checkpoint converters: pure functions, one per family."""
from .common import (CheckpointMismatchError, load_checkpoint_file, load_state_dict_checked,
                     strip_prefix, unwrap_state_dict)
from .conv2former import convert_conv2former
from .crossformer import convert_crossformer

#: family name -> converter
CONVERTERS = {
    'conv2former': convert_conv2former,
    'crossformer': convert_crossformer,
}

__all__ = [
    'CONVERTERS', 'CheckpointMismatchError', 'convert_conv2former', 'convert_crossformer',
    'load_checkpoint_file', 'load_state_dict_checked', 'strip_prefix', 'unwrap_state_dict'
]
