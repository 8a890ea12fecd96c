"""Conformer: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..state import backbone_state

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

# official layout -> mmhybrid's: the network's first (uncoupled) block belongs to stage 0;
# the fused blocks conv_trans_{i} go to stages.{s}.blocks.{j} (see fused_block_name)
_FIRST_BLOCK = {'conv_1': 'stages.0.cnn_block', 'trans_patch_conv': 'stages.0.patch_embed',
                'trans_1': 'stages.0.trans_block'}
_OFFICIAL_FIRST = re.compile(r'^(conv_1|trans_patch_conv|trans_1)\.')
_OFFICIAL_FUSED = re.compile(r'^conv_trans_(\d+)\.')


def stage_ends(depth: int) -> Tuple[int, int, int, int]:
    """The official block numbers (1..depth, block 1 the uncoupled first one) after which the four
    output stages end: ``depth / 3``, ``2 * depth / 3``, ``depth - 1`` and ``depth`` (4, 8, 11, 12)."""
    per_stage = depth // 3
    return per_stage, 2 * per_stage, depth - 1, depth


def fused_block_name(number: int, depth: int) -> Optional[str]:
    """mmhybrid's name ``stages.{s}.blocks.{j}`` of the official fused block ``conv_trans_{number}``
    in a network of ``depth`` blocks; None when there is no such block (``number`` outside 2..depth)."""
    start = 2
    for stage, end in enumerate(stage_ends(depth)):
        if start <= number <= end:
            return f'stages.{stage}.blocks.{number - start}'
        start = end + 1
    return None


def official_to_layout(key: str, depth: int) -> str:
    """An official key under its mmhybrid name, for a network of ``depth`` blocks; other keys
    (and official keys of blocks such a network does not have) unchanged.

    ``conv_1.*`` -> ``stages.0.cnn_block.*``, ``trans_patch_conv.*`` -> ``stages.0.patch_embed.*``,
    ``trans_1.*`` -> ``stages.0.trans_block.*``, ``conv_trans_{i}.*`` -> ``stages.{s}.blocks.{j}.*``;
    the stem (``conv1``, ``bn1``) and ``cls_token`` keep their names.
    """
    first = _OFFICIAL_FIRST.match(key)
    if first:
        return _FIRST_BLOCK[first.group(1)] + key[first.end() - 1:]
    fused = _OFFICIAL_FUSED.match(key)
    if fused:
        name = fused_block_name(int(fused.group(1)), depth)
        if name is not None:
            return name + key[fused.end() - 1:]
    return key


def _official_name(key: str) -> str:
    if _TRANSFORMER.match(key):
        for pattern, name in _MMPRETRAIN_NAMES:
            key = pattern.sub(name, key)
    return key


def _depth(keys) -> Optional[int]:
    """The depth of the network whose official keys these are: the number of its last fused block."""
    numbers = [int(m.group(1)) for m in map(_OFFICIAL_FUSED.match, keys) if m]
    if not numbers:
        return None
    depth = max(numbers)
    if depth < 6 or depth % 3:
        raise ValueError(f'its fused blocks run up to conv_trans_{depth}: a Conformer has a multiple of 3 '
                         'blocks, at least 6 (official: 12).')
    return depth


def convert_conformer(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official or mmpretrain Conformer checkpoint for :class:`mmhybrid.models.Conformer`.

    Unwraps the container (``model`` in the official classification files,
    ``state_dict`` in detection and mmpretrain files), keeps the ``backbone.`` part
    of detector, segmentor and mmpretrain classifier checkpoints, renames
    mmpretrain's transformer-block names (``ln1``/``ln2``, ``ffn.layers.0.0``/
    ``ffn.layers.1``) to the official ones (``norm1``/``norm2``, ``mlp.fc1``/
    ``mlp.fc2``), drops the classification heads (``trans_norm``,
    ``trans_cls_head``, ``conv_cls_head``) and maps the official layout to
    mmhybrid's (:func:`official_to_layout`; the depth is read from the last
    ``conv_trans_{i}``):

    * ``conv_1.*``, ``trans_patch_conv.*``, ``trans_1.*`` -> ``stages.0.cnn_block.*``,
      ``stages.0.patch_embed.*``, ``stages.0.trans_block.*``;
    * ``conv_trans_{i}.*`` -> ``stages.{s}.blocks.{j}.*`` (depth 12: blocks 2-4 in stage 0,
      5-8 in stage 1, 9-11 in stage 2, 12 in stage 3);
    * ``conv1``, ``bn1``, ``cls_token``: unchanged.

    Idempotent: a converted dict comes back unchanged.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.

    Raises:
        ValueError: the fused blocks do not make a Conformer depth, or one of them
            (``conv_trans_0``/``conv_trans_1``) has no place in it.
    """
    state = {_official_name(k): v for k, v in backbone_state(ckpt).items() if not _DROPPED.match(k)}
    depth = _depth(state)
    out = {official_to_layout(k, depth): v for k, v in state.items()}
    left = [k for k in out if _OFFICIAL_FUSED.match(k)]
    if left:
        raise ValueError(f'{left[0]} is not a block of a Conformer with {depth} blocks (fused blocks are '
                         f'conv_trans_2..conv_trans_{depth}).')
    return out
