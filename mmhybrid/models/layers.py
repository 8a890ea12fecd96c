"""Small building blocks shared by the backbone families."""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath

__all__ = ['DropPath', 'LayerNorm2d', 'Mlp', 'drop_path_rates', 'pad_bottom_right']


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's "channels_first" LayerNorm).

    A subclass of ``nn.LayerNorm`` (same ``weight``/``bias`` names), so optimizer
    rules for norms (mmengine ``norm_decay_mult``) apply to it. The map is viewed as
    NHWC for the fused kernel; for a channels_last tensor that view is contiguous
    and costs no copy, and the result keeps the channels_last layout.

    Args:
        num_channels (int): Channels C of the ``(B, C, H, W)`` input.
        eps (float): Added to the variance. Default: 1e-6 (ConvNeXt and its
            descendants; ``nn.LayerNorm`` itself defaults to 1e-5).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Two linear layers with an activation between (official names ``fc1``/``fc2``).

    Args:
        in_features (int): Input and output width.
        hidden_features (int): Hidden width.
        act_layer (type): Activation class. Default: exact GELU.
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path_rates(rate: float, depths: Sequence[int]) -> list:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks, per stage."""
    total = sum(depths)
    flat = [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(flat[start:start + d])
        start += d
    return out


def pad_bottom_right(x: torch.Tensor, multiple_h: int, multiple_w: int,
                     channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the bottom/right of a map so its sides are multiples of the given numbers.

    Args:
        x: ``(B, C, H, W)`` or, with ``channels_last``, ``(B, H, W, C)``.
        multiple_h: required multiple of the height.
        multiple_w: required multiple of the width.
        channels_last: layout of ``x``.
    """
    h, w = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    pad_h, pad_w = -h % multiple_h, -w % multiple_w
    if not pad_h and not pad_w:
        return x
    if channels_last:
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h))
