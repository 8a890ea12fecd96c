"""CrossFormer: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from .common import backbone_state

# classification head and final norm, and the position-index buffers of older files
# (recomputed by the model)
_DROPPED = re.compile(r'^(head\.|norm\.)|\.attn\.(biases|relative_position_index)$')


def convert_crossformer(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official CrossFormer checkpoint for :class:`mmhybrid.models.CrossFormer`.

    The project keeps the official parameter names, so conversion only unwraps
    the container (``model`` in classification files, ``state_dict`` in the
    released COCO/ADE20K files), keeps the ``backbone.`` part of detector and
    segmentor checkpoints, and drops the head, the final norm and old index
    buffers. Idempotent: a converted dict comes back unchanged.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt)
    return {k: v for k, v in state.items() if not _DROPPED.search(k)}
