"""CloFormer: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from ..state import backbone_state

# classification head and final GroupNorm of the official model
_DROPPED = re.compile(r'^(head|norm)\.')


def convert_cloformer(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert a CloFormer checkpoint of the official code for :class:`mmhybrid.models.CloFormer`.

    No official weights were released; this reads what the official training
    code (qhfan/CloFormer, a Swin-style ``main.py``) writes: the weights under
    ``model``, keys ``patch_embed.*`` and ``layers.i.blocks.j.*``, which the
    project keeps. Conversion unwraps the container, strips ``module.`` (a
    DistributedDataParallel state dict) and ``backbone.`` (detector and
    segmentor checkpoints) and drops the classifier's ``norm.*`` and
    ``head.*``. SyncBatchNorm and BatchNorm have the same keys. Idempotent: a
    converted dict comes back unchanged.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt)
    return {k: v for k, v in state.items() if not _DROPPED.match(k)}
