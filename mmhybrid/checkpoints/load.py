"""The one road from a checkpoint to a model: read safely, convert, check strictly, load, and on a
mismatch say what the weights fit."""
import logging
import warnings
from typing import Callable, Mapping, Optional, Union

import torch.nn as nn
from mmengine.logging import print_log

from .errors import CheckpointLoadError, CheckpointMismatchError
from .identify import mismatch_message
from .reader import load_checkpoint_file
from .state import load_state_dict_checked, unwrap_state_dict

__all__ = ['MODEL_ZOO_PREFIXES', 'convert_for', 'init_cfg_from_pretrained', 'load_into']

#: checkpoint schemes of the mmcv/mmengine/torchvision model zoos (ResNet, VGG, HRNet, ...);
#: none of them holds weights of an mmhybrid family
MODEL_ZOO_PREFIXES = ('open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://', 'mmcls://')


def convert_for(model: nn.Module, ckpt, source: str = 'checkpoint') -> dict:
    """A checkpoint object -> ``model``'s state dict, through its family's ``converter`` (or bare
    unwrapping) and its ``adapt_pretrained`` hook; nothing is loaded.

    Args:
        model: a backbone of a registered family (``type(model).converter``).
        ckpt: what the checkpoint file holds (official, OpenMMLab, converted, or a raw state dict).
        source: where it came from, for messages.

    Raises:
        CheckpointMismatchError: the converter recognises another family's weights.
        CheckpointLoadError: the object holds no weights the converter can read.
    """
    converter = getattr(type(model), 'converter', None)
    try:
        state = converter(ckpt) if converter else unwrap_state_dict(ckpt)
    except CheckpointMismatchError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointLoadError(f'{source}: {err}') from None
    adapt = getattr(model, 'adapt_pretrained', None)
    return adapt(state, source) if adapt is not None else state


def load_into(model: nn.Module, source: Union[str, Mapping], convert: Optional[Callable] = None,
              named_as: Optional[nn.Module] = None) -> None:
    """Load a checkpoint into ``model`` strictly, every key and shape matching.

    Args:
        model: the module to load.
        source: a checkpoint name (path, URL, model-zoo name: read by the safe loader) or an object
            already read (a checkpoint or state dict, called 'the state dict' in messages).
        convert: ``(ckpt, source) -> state dict`` for ``model``; default the model's ``convert_checkpoint``
            (a family may adapt the conversion), else :func:`convert_for`.
        named_as: the backbone that mismatch messages compare the weights with (default ``model``).

    Raises:
        CheckpointLoadError: the file cannot be read safely or holds no weights.
        CheckpointMismatchError: the weights belong to another architecture; the message names the
            family and arch they fit, when one does.
    """
    name = source if isinstance(source, str) else 'the state dict'
    ckpt = load_checkpoint_file(source) if isinstance(source, str) else source
    convert = convert or getattr(model, 'convert_checkpoint', None)
    state = convert(ckpt, name) if convert is not None else convert_for(model, ckpt, name)
    try:
        load_state_dict_checked(model, state, source=name)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(mismatch_message(ckpt, named_as or model, name, err)) from None


def init_cfg_from_pretrained(name: str, pretrained: Optional[str], init_cfg: Optional[dict]) -> Optional[dict]:
    """Turn the deprecated ``pretrained=`` into ``init_cfg``, or explain why it is not used.

    mmseg's ``EncoderDecoder`` passes the model-level ``model.pretrained`` into the
    backbone; mmseg's ResNet-based base configs set it to a model-zoo ResNet
    (``open-mmlab://resnet50_v1c``). A drop-in config inherits that value without
    writing it, so a model-zoo name is ignored with a warning instead of being loaded
    into another architecture.

    Args:
        name: the backbone class, for messages.
        pretrained: the ``pretrained`` argument.
        init_cfg: the ``init_cfg`` argument.

    Returns:
        The init_cfg to use.
    """
    if pretrained is None:
        return init_cfg
    where = ('backbone.pretrained, or in mmseg configs the model-level model.pretrained that '
             'EncoderDecoder passes to the backbone')
    if isinstance(pretrained, str) and pretrained.startswith(MODEL_ZOO_PREFIXES):
        print_log(f'{name} ignores pretrained={pretrained!r} ({where}): it names weights of another '
                  'network from a model zoo, not of this backbone. Set model.pretrained=None in your config '
                  'to silence this, and load weights with backbone.init_cfg=dict(type="Pretrained", '
                  'checkpoint=...).', logger='current', level=logging.WARNING)
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f'{name} got both init_cfg={dict(init_cfg)} and pretrained={pretrained!r} ({where}); '
                         'keep one: set model.pretrained=None (mmseg) or drop the backbone\'s init_cfg.')
    warnings.warn(f'pretrained={pretrained!r} is deprecated; use init_cfg=dict(type="Pretrained", '
                  'checkpoint=...) instead.', DeprecationWarning)
    return dict(type='Pretrained', checkpoint=pretrained)
