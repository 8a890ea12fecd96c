"""Conv2Former: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from .common import backbone_state

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


def convert_conv2former(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official Conv2Former checkpoint for :class:`mmhybrid.models.Conv2Former`.

    The project keeps the official parameter names (``downsample_layers.*``,
    ``stages.i.j.*``), so conversion only unwraps the container (the EMA weights
    when the file has them, see ``CONTAINER_PREFERENCE``), keeps the ``backbone.``
    part of detector and segmentor checkpoints, renames the old ``attn.a.*``
    branch to ``attn.att.*`` and drops the classification head. Idempotent: a
    converted dict comes back unchanged.

    The depthwise kernel size is not changed here: the backbone checks it against
    its own ``kernel_size`` when loading and names both sizes on a mismatch.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt, prefer=CONTAINER_PREFERENCE)
    return {_OLD_MODULATION.sub('.attn.att.', k): v for k, v in state.items() if not _DROPPED.match(k)}
