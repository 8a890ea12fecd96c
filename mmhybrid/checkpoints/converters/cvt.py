"""CvT: official (or HuggingFace) checkpoint -> mmhybrid state dict (a pure function)."""
import re
from typing import Dict, Mapping

import torch

from ..errors import CheckpointMismatchError
from ..state import backbone_state

# classification head and the final norm on the class token
_DROPPED = re.compile(r'^(head|norm)\.')

# HuggingFace transformers' CvtModel / CvtForImageClassification names the same
# weights differently; each pattern maps to the official name (in this order).
_HF_STAGE = re.compile(r'^(?:cvt\.)?encoder\.stages\.(\d+)\.')
_HF_DROPPED = re.compile(r'^(layernorm|classifier)\.')
_HF_RENAMES = [
    (re.compile(r'\.embedding\.convolution_embeddings\.projection\.'), '.patch_embed.proj.'),
    (re.compile(r'\.embedding\.convolution_embeddings\.normalization\.'), '.patch_embed.norm.'),
    (re.compile(r'\.layers\.(\d+)\.'), r'.blocks.\1.'),
    (re.compile(r'\.attention\.attention\.convolution_projection_(q|k|v)\w*\.convolution_projection\.convolution\.'),
     r'.attn.conv_proj_\1.conv.'),
    (re.compile(r'\.attention\.attention\.convolution_projection_(q|k|v)\w*\.convolution_projection\.normalization\.'),
     r'.attn.conv_proj_\1.bn.'),
    (re.compile(r'\.attention\.attention\.projection_(q|k|v)\w*\.'), r'.attn.proj_\1.'),
    (re.compile(r'\.attention\.output\.dense\.'), '.attn.proj.'),
    (re.compile(r'\.layernorm_before\.'), '.norm1.'),
    (re.compile(r'\.layernorm_after\.'), '.norm2.'),
    (re.compile(r'\.intermediate\.dense\.'), '.mlp.fc1.'),
    (re.compile(r'\.output\.dense\.'), '.mlp.fc2.'),
]


def _from_huggingface(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if _HF_DROPPED.match(key):
            continue
        match = _HF_STAGE.match(key)
        if not match:
            raise CheckpointMismatchError(
                f'{key!r} is neither an official CvT key nor a HuggingFace CvT key '
                '(cvt.encoder.stages.*, layernorm.*, classifier.*).')
        key = f'stage{match.group(1)}.' + key[match.end():]
        for pattern, repl in _HF_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def convert_cvt(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Convert an official CvT checkpoint for :class:`mmhybrid.models.CvT`.

    The official files are plain state dicts with the names this project keeps
    (``stage{i}.patch_embed.*``, ``stage{i}.blocks.{j}.*``, ``stage2.cls_token``), so
    conversion only unwraps a container if there is one (``state_dict``, ``model``),
    keeps the ``backbone.`` part of detector and segmentor checkpoints and drops the
    classifier (``head.*``) and its norm (``norm.*``); the class token stays, since it
    takes part in the last stage's attention. HuggingFace ``transformers`` files
    (``cvt.encoder.stages.*``) are renamed to the official names. Idempotent: a
    converted dict comes back unchanged.

    Note that HuggingFace's CvT runs its MLPs with exact GELU where the official
    models use QuickGELU; the weights are the same, and this backbone uses QuickGELU.

    Args:
        ckpt: the loaded checkpoint object or a plain state dict.

    Returns:
        A new ``name -> tensor`` dict.
    """
    state = backbone_state(ckpt)
    if any(_HF_STAGE.match(k) for k in state):
        state = _from_huggingface(state)
    return {k: v for k, v in state.items() if not _DROPPED.match(k)}
