"""Conv2Former: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from ..state import backbone_state

# The official files are written by timm's CheckpointSaver: the trained weights under
# 'state_dict' and, when trained with --model-ema, the EMA copy under 'state_dict_ema'.
# With EMA on, timm validates the EMA copy and picks 'model_best' by its accuracy, so
# the EMA weights are the ones the published numbers describe: prefer them.
CONTAINER_PREFERENCE = ('state_dict_ema', 'state_dict', 'model', 'module', 'model_ema')

# classification head: 1x1 conv + GELU + LayerNorm to 1280 ('head.*'), then the
# classifier ('pred.*'); 'norm.*' in case a port adds a final norm the official lacks
_DROPPED = re.compile(r'^(head|pred|norm)\.')
# the modulation branch was 'a' in the first release (convmod.py), 'att' since
_OLD_MODULATION = re.compile(r'\.attn\.a\.')
# official layout -> mmhybrid's (timm's ConvNeXt layout): the first downsampling layer is
# the stem, downsampling layer i >= 1 starts stage i, block j of stage i is in its blocks;
# the first pattern that matches applies. Earlier mmhybrid versions kept the official
# names, so these also rename their files (Conv2Former.legacy_key).
OFFICIAL_LAYOUT = (
    (re.compile(r'^downsample_layers\.0\.'), 'stem.'),
    (re.compile(r'^downsample_layers\.(\d+)\.'), r'stages.\1.downsample.'),
    (re.compile(r'^stages\.(\d+)\.(\d+)\.'), r'stages.\1.blocks.\2.'),
)


def official_to_layout(key: str) -> str:
    """An official key (``downsample_layers.i.*``, ``stages.i.j.*``) under its mmhybrid name
    (``stem.*``, ``stages.i.downsample.*``, ``stages.i.blocks.j.*``); any other key unchanged."""
    for pattern, name in OFFICIAL_LAYOUT:
        new, found = pattern.subn(name, key)
        if found:
            return new
    return key


def convert_conv2former(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official Conv2Former checkpoint for :class:`mmhybrid.models.Conv2Former`.

    Unwraps the container (the EMA weights when the file has them, see
    ``CONTAINER_PREFERENCE``), keeps the ``backbone.`` part of detector and
    segmentor checkpoints, renames the old ``attn.a.*`` branch to ``attn.att.*``,
    drops the classification head and maps the official layout to mmhybrid's
    (``OFFICIAL_LAYOUT``):

    * ``downsample_layers.0.*`` -> ``stem.*``;
    * ``downsample_layers.i.*`` (i >= 1) -> ``stages.i.downsample.*``;
    * ``stages.i.j.*`` -> ``stages.i.blocks.j.*``.

    Idempotent: a converted dict comes back unchanged. The depthwise kernel size is
    not changed here: the backbone checks it against its own ``kernel_size`` when
    loading and names both sizes on a mismatch.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt, prefer=CONTAINER_PREFERENCE)
    return {official_to_layout(_OLD_MODULATION.sub('.attn.att.', k)): v
            for k, v in state.items() if not _DROPPED.match(k)}
