"""mmseg segmentors as one exportable graph: backbone, neck, decode head, resize, class map."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .detectors import UnsupportedModelError

__all__ = ['SegmentorGraph']


class SegmentorGraph(nn.Module):
    """A built mmseg ``EncoderDecoder``'s whole-image inference as one graph.

    The decode head's logits are resized (bilinear, the head's ``align_corners``) to the input
    size, as ``decode_head.predict`` does, and the class map is their argmax (for a one-channel
    head: the logit's sigmoid above the head's ``threshold``).

    Args:
        segmentor: the built segmentor.
        logits: also return the resized logits.

    Raises:
        UnsupportedModelError: for other segmentors, or sliding-window inference.
    """

    def __init__(self, segmentor: nn.Module, logits: bool = False):
        super().__init__()
        if not hasattr(segmentor, 'decode_head') or not hasattr(segmentor, 'extract_feat'):
            raise UnsupportedModelError(f'{type(segmentor).__name__}: only mmseg EncoderDecoder segmentors are exported')
        mode = (segmentor.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole':
            raise UnsupportedModelError(f"test_cfg.mode={mode!r}: only whole-image inference is exported; set "
                                        "--cfg-options model.test_cfg.mode=whole (and export at the size to run)")
        self.segmentor = segmentor
        self.with_logits = logits

    @property
    def output_names(self) -> List[str]:
        return ['seg'] + (['logits'] if self.with_logits else [])

    def forward(self, images: torch.Tensor):
        """``images (B, 3, H, W)``, normalized and padded -> ``seg (B, H, W)`` class indices (int64) and,
        with ``logits``, ``logits (B, C, H, W)``."""
        head = self.segmentor.decode_head
        logits = head(self.segmentor.extract_feat(images))
        logits = F.interpolate(logits, size=images.shape[-2:], mode='bilinear', align_corners=head.align_corners)
        if logits.shape[1] == 1:
            seg = (logits.sigmoid() > head.threshold).long().squeeze(1)
        else:
            seg = logits.argmax(dim=1)
        return (seg, logits) if self.with_logits else seg
