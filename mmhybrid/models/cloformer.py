"""CloFormer (Fan et al., 2023) as a dense-prediction backbone.

Reads top-down: stem, the AttnConv attention (local context-aware branch and
pooled global branch), ConvFFN, block (whose last instance in a stage also
downsamples), stage, backbone. Module and parameter names are the official
ones (``patch_embed.*``, ``layers.i.blocks.j.*``), so a checkpoint trained with
the official code loads after dropping the classification head.

Differences from the official (classification) code that do not change its
results where it runs:

* any input size. The official global branch needs every stage map to be a
  multiple of its pooling size (input sides multiples of 32); here the pooling
  uses ``ceil_mode``: the windows keep the official top-left-aligned grid and a
  window cut by the map edge averages the pixels it covers. Where the official
  code runs (sides multiples of the pool size) this is exactly its pooling.
  Convolutions already give ``ceil(H / 2)`` at every stride 2, so the outputs
  are ``ceil(H / stride)`` without padding;
* the BatchNorms of the stem and of the downsampling shortcuts are built from
  ``norm_cfg`` (default ``BN``; the official code hard-codes SyncBatchNorm,
  which fails outside a distributed GPU run);
* the network runs in channels_last memory layout (see ``CloFormer``); the global
  branch uses fused attention (``scaled_dot_product_attention``, scale d^-0.5
  as the official); the local branch folds its d^-0.5 into the last 1x1 conv
  of the context weights; in CPU fp32 inference the FFN's GELU and the context
  weights' Swish and tanh run inside their convolutions (see ``conv_act``);
* the dense outputs: stage i < 3 is taken after the attention residual of its
  last block (before that block's downsampling FFN), the last stage after its
  last block, as the parity fixtures record.
"""
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from ..checkpoints.converters.cloformer import convert_cloformer
from ..registry import MODELS
from .base import HybridBackbone, per_stage
from .kernels import conv_act, depthwise_conv
from .layers import DropPath, drop_path_rates


def _channels_norm(dims: int) -> nn.GroupNorm:
    """GroupNorm(1, C): normalises over C*H*W of each image, affine per channel (the official norm)."""
    return nn.GroupNorm(1, dims)


# --------------------------------------------------------------------------------------
# Stem
# --------------------------------------------------------------------------------------
class ConvNormReLU(nn.Module):
    """conv3x3 (with bias, as the official) -> BatchNorm -> ReLU, weights under ``conv.{0,1}``.

    Args:
        in_channels (int): Input width.
        out_channels (int): Output width.
        stride (int): Stride of the convolution.
        norm_cfg (dict): The BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_cfg: dict):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1),
            build_norm_layer(norm_cfg, out_channels)[1],
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvStem(nn.Module):
    """Stride-4 stem: four conv-BN-ReLU (strides 2, 2, 1, 1), a 1x1 conv and GroupNorm(1, C).

    The first conv has half the width. The final norm keeps its official name
    ``layernorm`` although it is a GroupNorm with one group.

    Args:
        in_channels (int): Image channels.
        out_channels (int): Stem width (stage 0 width).
        norm_cfg (dict): The BatchNorms.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        self.conv1 = ConvNormReLU(in_channels, out_channels // 2, 2, norm_cfg)
        self.conv2 = ConvNormReLU(out_channels // 2, out_channels, 2, norm_cfg)
        self.conv3 = ConvNormReLU(out_channels, out_channels, 1, norm_cfg)
        self.conv4 = ConvNormReLU(out_channels, out_channels, 1, norm_cfg)
        self.conv5 = nn.Conv2d(out_channels, out_channels, 1)
        self.layernorm = _channels_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.layernorm(self.conv5(x))


# --------------------------------------------------------------------------------------
# Attention: AttnConv local branches + pooled global branch
# --------------------------------------------------------------------------------------
class ContextWeights(nn.Module):
    """``tanh(FC-Swish-FC(q * k) * scale)``: the local branch's context-aware weights.

    The FCs are the official ``AttnMap`` (weights ``act_block.{0,2}``); the scale
    (d^-0.5) is folded into the second FC's weights.

    Args:
        dims (int): Width of the local branch.
    """

    def __init__(self, dims: int):
        super().__init__()
        self.act_block = nn.Sequential(nn.Conv2d(dims, dims, 1), nn.SiLU(), nn.Conv2d(dims, dims, 1))

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        fc1, _, fc2 = self.act_block
        return conv_act(fc2, conv_act(fc1, x, 'swish'), 'tanh', scale)


class CloAttention(nn.Module):
    """AttnConv attention: context-aware local heads and pooled global heads, then a 1x1 projection.

    Local branch i (``qkvs.i``, ``convs.i``, ``act_blocks.i``): a 1x1 conv gives
    q, k, v; one depthwise k x k conv mixes all three; the output is
    ``tanh(FC-Swish-FC(q * k) * d^-0.5) * v``. Global branch (``global_q``,
    ``global_kv``): softmax attention of q (1x1 conv of x) over k, v (1x1 conv
    of x average-pooled by ``pool_size``). The branch outputs are concatenated
    (local branches first) and projected (``proj``).

    A branch with 0 heads is left out (no modules), as in the official code.

    Args:
        dims (int): Width.
        num_heads (int): Heads in all; the head width is ``dims // num_heads``.
        group_split (Sequence[int]): Heads per local branch, then the global heads.
        kernel_sizes (Sequence[int]): Depthwise kernel of each local branch (odd).
        pool_size (int): Average-pooling window (and stride) of the global keys/values.
        qkv_bias (bool): Bias of the q/k/v and output projections.
    """

    def __init__(self, dims: int, num_heads: int, group_split: Sequence[int], kernel_sizes: Sequence[int],
                 pool_size: int, qkv_bias: bool = True):
        super().__init__()
        self.head_dims = dims // num_heads
        self.scale = self.head_dims ** -0.5
        self.pool_size = pool_size
        self.qkvs, self.convs, self.act_blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for heads, k in zip(group_split[:-1], kernel_sizes):
            if not heads:
                continue
            width = heads * self.head_dims
            self.qkvs.append(nn.Conv2d(dims, 3 * width, 1, bias=qkv_bias))
            self.convs.append(nn.Conv2d(3 * width, 3 * width, k, padding=k // 2, groups=3 * width))
            self.act_blocks.append(ContextWeights(width))
        self.global_heads = group_split[-1]
        if self.global_heads:
            width = self.global_heads * self.head_dims
            self.global_q = nn.Conv2d(dims, width, 1, bias=qkv_bias)
            self.global_kv = nn.Conv2d(dims, 2 * width, 1, bias=qkv_bias)
        self.proj = nn.Conv2d(dims, dims, 1, bias=qkv_bias)

    def local_branch(self, x: torch.Tensor, i: int) -> torch.Tensor:
        qkv = depthwise_conv(self.convs[i], self.qkvs[i](x))
        q, k, v = qkv.chunk(3, dim=1)
        return self.act_blocks[i](q * k, self.scale) * v

    def global_branch(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        heads, d = self.global_heads, self.head_dims
        q = self.global_q(x).reshape(b, heads, d, h * w).transpose(-1, -2)
        pooled = x if self.pool_size == 1 else F.avg_pool2d(x, self.pool_size, ceil_mode=True)
        # the key count is explicit: a -1 cannot be inferred from an empty batch
        kv = self.global_kv(pooled).reshape(b, 2, heads, d, pooled.shape[-2] * pooled.shape[-1]).transpose(-1, -2)
        out = F.scaled_dot_product_attention(q, kv[:, 0], kv[:, 1], scale=self.scale)
        return out.transpose(-1, -2).reshape(b, heads * d, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.local_branch(x, i) for i in range(len(self.qkvs))]
        if self.global_heads:
            outs.append(self.global_branch(x))
        return self.proj(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])


# --------------------------------------------------------------------------------------
# Block
# --------------------------------------------------------------------------------------
class ConvFFN(nn.Module):
    """1x1 -> GELU (exact) -> depthwise k x k (stride 1 or 2) -> 1x1 (official names ``fc1``, ``dwconv``, ``fc2``).

    Args:
        in_dims (int): Input width.
        hidden_dims (int): Hidden width.
        out_dims (int): Output width.
        kernel_size (int): Depthwise kernel (odd).
        stride (int): Depthwise stride; 2 in the downsampling block.
    """

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.fc1 = nn.Conv2d(in_dims, hidden_dims, 1)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, kernel_size, stride, kernel_size // 2,
                                groups=hidden_dims)
        self.fc2 = nn.Conv2d(hidden_dims, out_dims, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(depthwise_conv(self.dwconv, conv_act(self.fc1, x, 'gelu')))


class CloBlock(nn.Module):
    """``x + Attn(GN x)``, then ``shortcut(x) + FFN(GN x)``.

    In the last block of stages 0-2 the FFN's depthwise conv has stride 2 and
    widens to the next stage, and the shortcut is ``downsample``: conv k x k
    stride 2 -> BatchNorm -> conv 1x1 (official names ``downsample.{0,1,2}``).

    Args:
        dims (int): Width.
        out_dims (int): Output width (the next stage's when downsampling).
        num_heads (int): Attention heads.
        group_split (Sequence[int]): Heads per local branch, then global heads.
        kernel_sizes (Sequence[int]): Local depthwise kernels.
        pool_size (int): Pooling of the global keys/values.
        mlp_kernel_size (int): FFN depthwise kernel (and shortcut conv kernel).
        mlp_ratio (float): FFN hidden width / width.
        downsample (bool): Stride 2 at the end of this block.
        drop_path (float): Stochastic depth rate.
        norm_cfg (dict): The shortcut's BatchNorm.
    """

    def __init__(self, dims: int, out_dims: int, num_heads: int, group_split: Sequence[int],
                 kernel_sizes: Sequence[int], pool_size: int, mlp_kernel_size: int, mlp_ratio: float,
                 downsample: bool, drop_path: float, norm_cfg: dict):
        super().__init__()
        self.norm1 = _channels_norm(dims)
        self.attn = CloAttention(dims, num_heads, group_split, kernel_sizes, pool_size)
        self.norm2 = _channels_norm(dims)
        self.mlp = ConvFFN(dims, int(dims * mlp_ratio), out_dims, mlp_kernel_size, 2 if downsample else 1)
        self.downsample = nn.Sequential(
            nn.Conv2d(dims, dims, mlp_kernel_size, 2, mlp_kernel_size // 2),
            build_norm_layer(norm_cfg, dims)[1],
            nn.Conv2d(dims, out_dims, 1)) if downsample else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the map after the attention residual and the block output."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return x, shortcut + self.drop_path(self.mlp(self.norm2(x)))


class CloLayer(nn.Module):
    """One stage, ``blocks`` (official ``layers.i.blocks``); its last block downsamples, except in the last stage."""

    def __init__(self, blocks: Sequence[CloBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
@MODELS.register_module()
class CloFormer(HybridBackbone):
    """CloFormer backbone returning multi-scale NCHW maps (strides 4, 8, 16, 32).

    Stage i < 3 is returned after the attention residual of its last block,
    which then downsamples inside its FFN to the next stage; the last stage
    after its last block. The network runs in channels_last memory layout: on
    CPU the 1x1 convs and the depthwise convs need no layout conversions, the
    global branch's q/k/v views and the attention output are free reshapes,
    and the GroupNorms have a channels_last kernel, so the forward is faster
    than in NCHW; the returned maps are ordinary contiguous NCHW tensors.

    Args:
        arch (str | dict): 'xxs', 'xs', 's', or a dict with ``embed_dims``,
            ``depths``, ``num_heads`` and ``group_splits`` (per stage: heads of
            each local branch, then the global heads, summing to the stage's
            heads), optionally ``kernel_sizes`` (per stage, one odd kernel per
            local branch; default (3,), (5,), (7,), (9,)), ``pool_sizes`` (global
            key/value pooling per stage, the official ``window_sizes``; default
            8, 4, 2, 1), ``mlp_kernel_sizes`` (default 5) and ``mlp_ratios``
            (default 4), each an int for all stages or one per stage.
        drop_path_rate (float): Stochastic depth, linear over all blocks. Default: 0.1.
        norm_cfg (dict): The BatchNorms of the stem and of the downsampling
            shortcuts. Default: ``dict(type='BN')`` (works on one device or many;
            use ``SyncBN`` for multi-GPU training as the official ImageNet code).
        frozen_stages (int): -1 none, 0 the stem, k the stem and stages 0..k-1
            (stage i includes the downsampling at the end of its last block).
            Default: -1.
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``, ...): see
            :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'CloFormer'
    key = 'cloformer'
    converter = staticmethod(convert_cloformer)
    arch_zoo = {
        'xxs': dict(embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2), num_heads=(4, 4, 8, 16),
                    group_splits=((3, 1), (2, 2), (4, 4), (4, 12))),
        'xs': dict(embed_dims=(48, 96, 160, 352), depths=(2, 2, 6, 2), num_heads=(3, 6, 10, 22),
                   group_splits=((2, 1), (3, 3), (5, 5), (7, 15))),
        's': dict(embed_dims=(64, 128, 224, 448), depths=(2, 2, 6, 2), num_heads=(4, 8, 14, 28),
                  group_splits=((3, 1), (4, 4), (7, 7), (7, 21))),
    }
    arch_aliases: Dict[str, str] = {'xx-small': 'xxs', 'x-small': 'xs', 'small': 's'}
    arch_required = ('embed_dims', 'depths', 'num_heads', 'group_splits')
    #: how the family appears in timm (see CrossFormer.timm)
    timm = dict(
        variants={'cloformer_xxs': 'xxs', 'cloformer_xs': 'xs', 'cloformer_s': 's'},
        first_conv=('patch_embed.conv1.conv.0', ),
        # official classification/models/CloFormer.py: norm (GroupNorm(1, C), eps 1e-5) on the
        # last map -> avgpool -> head (Linear); no weights were released
        classifier=('pool', dict(norm='group', norm_eps=1e-5), {'norm': 'norm', 'head': 'fc'}),
        params={'cloformer_xxs': 4.2, 'cloformer_xs': 7.2, 'cloformer_s': 12.3},
        # the official (Swin-style) test transform: resize 256/224 bicubic, centre crop, ImageNet mean/std
        cfg=dict(crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 paper_ids='arXiv:2303.17803', origin_url='https://github.com/qhfan/CloFormer'))
    #: the size the GPU check and the benchmarks time (see CrossFormer.benchmark)
    benchmark = dict(name='CloFormer-S', cfg=dict(arch='s'), official='official/cloformer_s')
    #: a small arch for fast CPU checks (tests, ``preflight.py --tiny``): xxs's kinds of block (one local
    #: branch + global heads; with and without downsampling) at a fifth of its blocks and widths
    test_arch = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), num_heads=(2, 2, 3, 4),
                     group_splits=((1, 1), (1, 1), (2, 1), (1, 3)))

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='BN'),
                 **kwargs):
        self.drop_path_rate = drop_path_rate
        self.norm_cfg = norm_cfg
        super().__init__(arch=arch, **kwargs)

    def build(self, spec: dict) -> Tuple[Tuple[int, ...], List[int]]:
        """``patch_embed`` and the stages (``layers``); the stage widths at strides ``4 * 2^i``."""
        stages = self._validate(spec)
        dims = stages['embed_dims']
        num = len(dims)

        self.patch_embed = ConvStem(self.in_channels, dims[0], self.norm_cfg)
        self.layers = nn.ModuleList()
        for i, rates in enumerate(drop_path_rates(self.drop_path_rate, stages['depths'])):
            last = i == num - 1
            self.layers.append(CloLayer([
                CloBlock(dims[i], dims[i] if last or j < len(rates) - 1 else dims[i + 1],
                         stages['num_heads'][i], stages['group_splits'][i], stages['kernel_sizes'][i],
                         stages['pool_sizes'][i], stages['mlp_kernel_sizes'][i], stages['mlp_ratios'][i],
                         downsample=not last and j == len(rates) - 1, drop_path=rate, norm_cfg=self.norm_cfg)
                for j, rate in enumerate(rates)]))
        return dims, [4 * 2**i for i in range(num)]

    def _validate(self, spec: dict) -> dict:
        """Per-stage tuples of every option, checked against each other."""
        depths = tuple(spec['depths'])
        num = len(depths)
        out = dict(depths=depths)
        out['embed_dims'] = per_stage(spec['embed_dims'], num, 'embed_dims')
        out['num_heads'] = per_stage(spec['num_heads'], num, 'num_heads')
        out['group_splits'] = tuple(tuple(g) for g in per_stage(spec['group_splits'], num, 'group_splits'))
        kernels = spec.get('kernel_sizes', ((3, ), (5, ), (7, ), (9, ))[:num] if num <= 4 else None)
        if kernels is None:
            raise ValueError('kernel_sizes has no default for more than 4 stages; give one list per stage.')
        out['kernel_sizes'] = tuple((k, ) if isinstance(k, int) else tuple(k)
                                    for k in per_stage(kernels, num, 'kernel_sizes'))
        pools = spec.get('pool_sizes', (8, 4, 2, 1)[:num] if num <= 4 else 1)
        out['pool_sizes'] = per_stage(pools, num, 'pool_sizes')
        out['mlp_kernel_sizes'] = per_stage(spec.get('mlp_kernel_sizes', 5), num, 'mlp_kernel_sizes')
        out['mlp_ratios'] = per_stage(spec.get('mlp_ratios', 4), num, 'mlp_ratios')
        for i in range(num):
            dims, heads, split = out['embed_dims'][i], out['num_heads'][i], out['group_splits'][i]
            if sum(split) != heads or any(h < 0 for h in split) or len(split) < 1:
                raise ValueError(f'stage {i}: group_splits {split} must be non-negative head counts '
                                 f'(local branches, then global) summing to num_heads={heads}.')
            if dims % heads:
                raise ValueError(f'stage {i}: embed_dims {dims} is not divisible by num_heads {heads}.')
            if len(out['kernel_sizes'][i]) != len(split) - 1:
                raise ValueError(f'stage {i}: kernel_sizes {out["kernel_sizes"][i]} needs one kernel per '
                                 f'local branch of group_splits {split} ({len(split) - 1}).')
            kernels = out['kernel_sizes'][i] + (out['mlp_kernel_sizes'][i], )
            if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
                raise ValueError(f'stage {i}: kernel sizes must be positive odd ints, got {kernels}.')
            if not isinstance(out['pool_sizes'][i], int) or out['pool_sizes'][i] < 1:
                raise ValueError(f'stage {i}: pool_sizes must be positive ints, got {out["pool_sizes"][i]!r}.')
        return out

    def _default_init(self) -> None:
        # the official code keeps PyTorch's default initialisation of every layer
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` -> maps of ``ceil(H / s) x ceil(W / s)``, the ``out_indices`` stages in stage order."""
        self.check_input(x)
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for i, layer in enumerate(self.layers[:self.out_indices[-1] + 1]):  # no stage after the last output
            for block in layer.blocks:
                mid, x = self.run_block(block, x)
            if i in self.out_indices:
                outs.append((mid if block.downsample is not None else x).contiguous())
        return self.finish_outputs(outs)
