"""State dicts inside checkpoints: unwrapping, prefixes, and the strict check that names what does not match.

The family converters are pure functions from an official state dict (or a whole
checkpoint object) to this project's state dict. What they share lives here:
unwrapping the container formats, prefix handling, and the strict load that
refuses a mismatched checkpoint by naming the keys.
"""
from typing import Dict, Iterable, Mapping

import torch

from .errors import CheckpointMismatchError

#: container keys under which checkpoints keep their weights, most specific first
_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'state_dict_ema', 'model_ema')


def unwrap_state_dict(ckpt: Mapping, prefer: Iterable[str] = _CONTAINER_KEYS) -> Dict[str, torch.Tensor]:
    """Return the flat ``name -> tensor`` dict inside a checkpoint object.

    Accepts a raw state dict or one wrapped under ``state_dict``, ``model``,
    ``module`` or ``state_dict_ema`` (the first present in ``prefer`` wins).

    Args:
        ckpt: what ``torch.load`` returned.
        prefer: container keys, in order of preference.
    """
    if not isinstance(ckpt, Mapping):
        raise TypeError(f'A checkpoint must be a dict, got {type(ckpt).__name__}.')
    for key in prefer:
        inner = ckpt.get(key)
        if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    tensors = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f'holds no weights (no tensors at the top level or under {", ".join(prefer)}; '
                         f'top-level keys: {list(ckpt)[:10]}).')
    return tensors


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Keep only the keys under ``prefix`` (without it) when any key has it.

    A detector or segmentor checkpoint holds the backbone under ``backbone.``;
    a backbone-only dict is returned unchanged.
    """
    if not any(k.startswith(prefix) for k in state):
        return dict(state)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def backbone_state(ckpt: Mapping, prefer: Iterable[str] = _CONTAINER_KEYS) -> Dict[str, torch.Tensor]:
    """The backbone's weights in any checkpoint: unwrapped from its container, without the
    ``module.`` prefix of a DistributedDataParallel state dict, and only the ``backbone.``
    part of a detector or segmentor checkpoint (all of it when no key has that prefix).

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.
        prefer: container keys, in order of preference.
    """
    return strip_prefix(strip_prefix(unwrap_state_dict(ckpt, prefer), 'module.'), 'backbone.')


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                     source: str = 'checkpoint', max_listed: int = 8) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` fits ``model`` exactly (nothing is loaded).

    Every parameter and buffer the model saves must be present with the same
    shape, and no extra key may be left over: a checkpoint of another
    architecture (other depth or width) is refused, not half-loaded. The model
    may live on the meta device.

    Args:
        model: the backbone.
        state: converted weights.
        source: where they came from, for the message.
        max_listed: how many keys of each kind the message names.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def listed(items):
            more = f' ... (+{len(items) - max_listed} more)' if len(items) > max_listed else ''
            return ', '.join(items[:max_listed]) + more
        parts = []
        if shapes:
            parts.append(f'shape mismatch: {listed(shapes)}')
        if missing:
            parts.append(f'missing in checkpoint: {listed(missing)}')
        if unexpected:
            parts.append(f'not in model: {listed(unexpected)}')
        raise CheckpointMismatchError(
            f'{source} does not match {type(model).__name__} '
            f'({getattr(model, "arch_name", "this architecture")}): ' + '; '.join(parts) +
            '. Check that arch (and family options) match the checkpoint.')


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                            source: str = 'checkpoint', max_listed: int = 8) -> None:
    """Load ``state`` into ``model`` strictly, or raise naming what does not match.

    Args:
        model: the backbone.
        state: converted weights.
        source: where they came from, for the message.
        max_listed: how many keys of each kind the message names.
    """
    check_state_dict(model, state, source, max_listed)
    model.load_state_dict(state, strict=False)
