"""CrossFormer: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from ..errors import CheckpointMismatchError
from ..state import backbone_state

# classification head and final norm, and the position-index buffers of older files
# (recomputed by the model)
_DROPPED = re.compile(r'^(head\.|norm\.)|\.attn\.(biases|relative_position_index)$')
#: the activation cooling layers of CrossFormer++, which v1 networks do not have
ACL_KEY = re.compile(r'^layers\.\d+\.blocks\.\d+\.(ex_conv|ex_ln)\.')


def crossformer_backbone_state(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """The backbone weights of a CrossFormer or CrossFormer++ checkpoint, under their official names."""
    state = backbone_state(ckpt)
    return {k: v for k, v in state.items() if not _DROPPED.search(k)}


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

    Raises:
        CheckpointMismatchError: a CrossFormer++ checkpoint (it has activation
            cooling layers, ``ex_conv``/``ex_ln``).
    """
    state = crossformer_backbone_state(ckpt)
    acl = sorted(k for k in state if ACL_KEY.match(k))
    if acl:
        raise CheckpointMismatchError(
            f'a CrossFormer++ checkpoint, not a CrossFormer (v1) one: it has activation cooling layers '
            f"({acl[0]}, ...): use type='mmhybrid.CrossFormerPP' (convert.py crossformer_pp).")
    return state
