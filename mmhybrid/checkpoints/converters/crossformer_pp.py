"""CrossFormer++: official checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from ..errors import CheckpointMismatchError
from .crossformer import ACL_KEY, crossformer_backbone_state

_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.')


def convert_crossformer_pp(ckpt: Mapping, acl: bool = True) -> Dict[str, torch.Tensor]:
    """Convert an official CrossFormer++ checkpoint for :class:`mmhybrid.models.CrossFormerPP`.

    The official main-branch code has CrossFormer's parameter names plus the
    activation cooling layers (``layers.S.blocks.B.ex_conv``/``ex_ln``), which the
    project keeps; conversion is CrossFormer's: unwrap the container (``model`` in
    the classification files), keep the ``backbone.`` part of detector and
    segmentor checkpoints, drop the classifier's ``norm.*`` and ``head.*``.
    Idempotent: a converted dict comes back unchanged.

    A CrossFormer++ network has an ACL in every stage of four or more blocks; a
    file with such a stage and no ACL at all is a CrossFormer (v1) checkpoint and
    is refused by name.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.
        acl: False for a network built without ACL (``use_acl=False``), whose files
            have v1's keys and are not refused.

    Returns:
        A new ``name -> tensor`` dict.

    Raises:
        CheckpointMismatchError: a CrossFormer (v1) checkpoint.
    """
    state = crossformer_backbone_state(ckpt)
    if acl and not any(ACL_KEY.match(k) for k in state):
        depths = {}
        for match in filter(None, map(_BLOCK.match, state)):
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
        deep = [s for s, d in sorted(depths.items()) if d >= 4]
        if deep:
            raise CheckpointMismatchError(
                f'a CrossFormer (v1) checkpoint, not a CrossFormer++ one: stage {deep[0]} has '
                f'{depths[deep[0]]} blocks and no activation cooling layer (ex_conv/ex_ln): '
                "use type='mmhybrid.CrossFormer' (convert.py crossformer).")
    return state
