"""Which family and size a checkpoint's weights fit: what a mismatch message names instead of bare keys.

The families are the backbone classes registered in ``mmhybrid.registry.MODELS`` (each with a
``key``, an ``arch_zoo`` and a ``converter``); nothing here imports ``mmhybrid.models``.
"""
import re
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .state import unwrap_state_dict

__all__ = ['families', 'identify_checkpoint', 'mismatch_message']


def families() -> Dict[str, type]:
    """The registered backbone families by ``key`` (classes with a ``key`` and an ``arch_zoo``)."""
    from ..registry import MODELS
    return {cls.key: cls for cls in MODELS.module_dict.values()
            if isinstance(cls, type) and getattr(cls, 'key', None) and getattr(cls, 'arch_zoo', None)}


def _pattern(key: str) -> str:
    return re.sub(r'\d+', '#', key)


@lru_cache(maxsize=None)
def _arch_shapes(cls: type, arch: str) -> Dict[str, tuple]:
    """Parameter shapes of one zoo arch, built on the meta device (no memory, milliseconds)."""
    with torch.device('meta'):
        model = cls(arch=arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}


def _fit(cls: type, ckpt) -> Optional[Tuple[str, Optional[str]]]:
    """``(class name, arch)`` when the weights are exactly a zoo arch of ``cls``, ``(class name, None)``
    when the family's key pattern (digits ignored) covers at least 90% of them, else None."""
    try:
        state = cls.converter(ckpt) if cls.converter else unwrap_state_dict(ckpt)
    except Exception:  # noqa: BLE001  (a converter refusing the file means: not this family)
        return None
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith('num_batches_tracked')}
    if not shapes:
        return None
    patterns = set()
    for arch in cls.arch_zoo:
        own = _arch_shapes(cls, arch)
        if own == shapes:
            return cls.__name__, arch
        patterns |= {_pattern(k) for k in own}
    fit = sum(_pattern(k) in patterns for k in shapes) / len(shapes)
    return (cls.__name__, None) if fit >= 0.9 else None


def identify_checkpoint(ckpt) -> List[Tuple[str, Optional[str]]]:
    """Which registered families (and zoo archs) a checkpoint's weights fit.

    Args:
        ckpt: what a checkpoint file holds.

    Returns:
        ``(family class name, arch name or None)`` pairs, best fit first: exact matches of keys
        and shapes (naming the arch), then families matched by key pattern only (None).
    """
    fits = [f for f in (_fit(cls, ckpt) for _, cls in sorted(families().items())) if f is not None]
    return [f for f in fits if f[1] is not None] + [f for f in fits if f[1] is None]


def mismatch_message(ckpt, model: nn.Module, source: str, err: Exception) -> str:
    """One line for a checkpoint that does not fit ``model``, naming what it fits instead.

    Args:
        ckpt: what the checkpoint file holds.
        model: the backbone it was loaded into.
        source: the file, for the message.
        err: the key-level mismatch (used when the weights fit a custom arch of
            the same family, where the keys say most).
    """
    fits = identify_checkpoint(ckpt)
    if not fits:
        return f'{err} The keys fit none of the mmhybrid families.'
    family, arch = fits[0]
    mine = type(model).__name__
    if family == mine:
        if arch is None:
            return str(err)
        return (f"{source}: the weights fit {family}(arch='{arch}'), not this {mine}(arch="
                f"'{getattr(model, 'arch_name', '?')}'): set arch to match the checkpoint.")
    what = f" (arch='{arch}')" if arch else ' (a custom arch)'
    return (f'{source}: a {family}{what} checkpoint, not one of {mine}: '
            f"use type='mmhybrid.{family}', or a {mine} checkpoint.")
