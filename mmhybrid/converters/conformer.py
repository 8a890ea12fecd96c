"""Conformer: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from .common import backbone_state

# classification heads of the official classification model (trans_norm is the
# LayerNorm in front of the token classifier); mmpretrain keeps trans_norm in the
# backbone and its heads under 'head.', outside 'backbone.'
_DROPPED = re.compile(r'^(trans_norm|trans_cls_head|conv_cls_head|head)\.')
# mmpretrain's TransformerEncoderLayer names -> the official (timm ViT) block names
_MMPRETRAIN_NAMES = (
    (re.compile(r'\.ln1\.'), '.norm1.'),
    (re.compile(r'\.ln2\.'), '.norm2.'),
    (re.compile(r'\.ffn\.layers\.0\.0\.'), '.mlp.fc1.'),
    (re.compile(r'\.ffn\.layers\.1\.'), '.mlp.fc2.'),
)
# the transformer blocks, the only place where these names occur
_TRANSFORMER = re.compile(r'^(trans_1|conv_trans_\d+\.trans_block)\.')


def _official_name(key: str) -> str:
    if _TRANSFORMER.match(key):
        for pattern, name in _MMPRETRAIN_NAMES:
            key = pattern.sub(name, key)
    return key


def convert_conformer(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official or mmpretrain Conformer checkpoint for :class:`mmhybrid.models.Conformer`.

    The project keeps the official parameter names, so conversion unwraps the
    container (``model`` in the official classification files, ``state_dict``
    in detection and mmpretrain files), keeps the ``backbone.`` part of
    detector, segmentor and mmpretrain classifier checkpoints, renames
    mmpretrain's transformer-block names (``ln1``/``ln2``, ``ffn.layers.0.0``/
    ``ffn.layers.1``) to the official ones (``norm1``/``norm2``, ``mlp.fc1``/
    ``mlp.fc2``) and drops the classification heads (``trans_norm``,
    ``trans_cls_head``, ``conv_cls_head``). Idempotent: a converted dict comes
    back unchanged.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt)
    return {_official_name(k): v for k, v in state.items() if not _DROPPED.match(k)}
