"""Official-checkpoint converters: pure functions, one per family.

``CONVERTERS`` (family key -> converter) is read from the registered backbones
(each names its converter), so a new family is added in one place.
"""
from .common import (CheckpointMismatchError, check_state_dict, load_state_dict_checked, strip_prefix,
                     unwrap_state_dict)
from .cloformer import convert_cloformer
from .conformer import convert_conformer
from .conv2former import convert_conv2former
from .crossformer import convert_crossformer
from .crossformer_pp import convert_crossformer_pp
from .cvt import convert_cvt


def __getattr__(name):
    if name == 'CONVERTERS':  # family key -> converter, from the registry (models import this package)
        from ..models.base import registered_families
        return {key: cls.converter for key, cls in sorted(registered_families().items())}
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'CONVERTERS', 'CheckpointMismatchError', 'check_state_dict', 'convert_cloformer', 'convert_conformer',
    'convert_conv2former', 'convert_crossformer', 'convert_crossformer_pp', 'convert_cvt', 'load_state_dict_checked',
    'strip_prefix', 'unwrap_state_dict'
]
