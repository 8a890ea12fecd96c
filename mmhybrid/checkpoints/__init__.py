"""Everything between a checkpoint file and a model, in one place.

- :mod:`.reader`: the safe reader every file goes through (:func:`load_checkpoint_file`: weights-only
  unpickling, downloads, mmengine's schemes) and its installation as mmengine's loader;
- :mod:`.converters`: one pure function per family, official state dict -> project state dict;
- :mod:`.state`: unwrapping containers and prefixes, and the strict check that names what differs;
- :mod:`.identify`: which family and arch a checkpoint fits, for messages;
- :mod:`.load`: the road itself, :func:`load_into` (read, convert, check, load, explain);
- :mod:`.errors`: :class:`CheckpointLoadError` (cannot be read) and :class:`CheckpointMismatchError`
  (weights of another architecture).

Nothing here imports ``mmhybrid.models``: the families are found through the registry.
"""
from .errors import CheckpointLoadError, CheckpointMismatchError, CheckpointNotFoundError
from .identify import families, identify_checkpoint, mismatch_message
from .load import convert_for, load_into
from .reader import install_safe_checkpoint_loaders, load_checkpoint_file, mmengine_checkpoint_safe_globals
from .state import backbone_state, check_state_dict, load_state_dict_checked, strip_prefix, unwrap_state_dict

__all__ = [
    'CheckpointLoadError', 'CheckpointMismatchError', 'CheckpointNotFoundError', 'backbone_state',
    'check_state_dict', 'convert_for', 'families', 'identify_checkpoint', 'install_safe_checkpoint_loaders',
    'load_checkpoint_file', 'load_into', 'load_state_dict_checked', 'mismatch_message',
    'mmengine_checkpoint_safe_globals', 'strip_prefix', 'unwrap_state_dict'
]
