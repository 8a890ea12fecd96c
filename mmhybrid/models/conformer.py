"""Conformer (Peng et al., ICCV 2021) as a dense-prediction backbone.

Conformer couples a ResNet-like CNN branch with a ViT branch at every block: the
CNN's bottleneck features are pooled into patch tokens (FCUDown) and added to
the transformer's input, and the transformer's output is projected back and
added inside the next CNN bottleneck (FCUUp). As in the official detection
backbone, the dense outputs are the CNN-branch maps after fused blocks 4, 8, 11
and 12 (strides 4, 8, 16, 32; channels C1, C2, C3, C3).

Reads top-down: conv + BatchNorm (folded when the statistics are frozen), the
upsample-add of the coupling, the bottleneck, the two coupling units, the
transformer block, the fused block, the stage, the backbone. Each output stage is
one module (``stages.i``, see ``Conformer``); inside the blocks the names are the
official ones (``cnn_block``, ``fusion_block``, ``squeeze_block``, ``expand_block``,
``trans_block``). The converter maps the official top-level names (``conv_1``,
``trans_patch_conv``, ``trans_1``, ``conv_trans_{i}``), and files saved by
earlier mmhybrid versions, which kept them, load as they are
(``Conformer.legacy_key``).

Differences from the official code that do not change its results where it runs
(``ceil(H / 4)`` and ``ceil(W / 4)`` multiples of ``patch_size / 4``):

* any input size. The CNN branch runs at the true size (outputs are
  ``ceil(H / stride)``); only the token side is padded: the patch embedding
  sees the stem output zero-padded at the bottom/right, FCUDown averages a
  border patch over its real pixels, and FCUUp's upsampled map is cut to the
  CNN map. The official code stops with a shape error at other sizes;
* BatchNorm in eval mode (frozen statistics: ``norm_eval``, and inference) is
  folded into the preceding convolution on every call (nothing is written
  into the module). Besides the saved BatchNorm pass this keeps the
  convolution outputs out of the autograd graph: a BN layer keeps its input
  for the backward pass, a convolution with folded weights does not;
* FCUDown pools before its 1x1 projection (the official projects every pixel,
  then pools): the same affine map, applied to 1/s^2 of the pixels;
* FCUUp adds the token map to the CNN map through a broadcast view instead of
  materialising the nearest-upsampled map;
* attention runs through ``F.scaled_dot_product_attention``;
* ReLU after the stem's max-pool (the official applies it before; max and
  ReLU commute), on a quarter of the pixels;
* the network runs in channels_last memory layout; the returned maps are
  contiguous NCHW tensors.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from ..checkpoints.converters.conformer import convert_conformer, official_to_layout, stage_ends
from ..registry import MODELS
from .base import HybridBackbone
from .kernels import attention, conv_bn
from .layers import DropPath, Mlp, bn_affine, drop_path_rates, fx_leaf, has_hooks, pad_bottom_right, trunc_normal_init

# size-dependent Python runs as leaves of FX graphs (``fx_leaf``: add_upsampled, token_grid, and
# the shared pad_bottom_right), so a traced model works at any input size


# --------------------------------------------------------------------------------------
# Convolution + BatchNorm, upsample-add
# --------------------------------------------------------------------------------------
def conv_bn_act(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool = False,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``bn(conv(x))`` (BatchNorm folded when frozen, see ``conv_bn``), then ``+ residual`` if
    given, then an optional ReLU (both in place: neither a convolution nor a training-mode
    BN needs its output for the backward pass)."""
    y = conv_bn(x, conv, bn)
    if residual is not None:
        y = y.add_(residual)
    return y.relu_() if relu else y


@fx_leaf
def add_upsampled(x: torch.Tensor, small: torch.Tensor, scale: int) -> torch.Tensor:
    """``x + nearest_upsample(small, scale)``, cut to ``x``'s size, without the upsampled map.

    Args:
        x: ``(B, C, H, W)``.
        small: ``(B, C, ceil(H / scale), ceil(W / scale))``.
        scale: the upsampling factor.
    """
    if scale == 1:
        return x + small
    b, c, height, width = x.shape
    h, w = small.shape[-2:]
    if h * scale != height or w * scale != width:   # a partial border patch: rare, not worth a kernel
        up = small.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        return x + up[:, :, :height, :width]
    out = x.view(b, c, h, scale, w, scale) + small[:, :, :, None, :, None]
    # the sum takes x's memory layout (channels_last here), in which this merge is a view
    return out.reshape(b, c, height, width)


@fx_leaf
def token_grid(x: torch.Tensor, patch_size: int) -> Tuple[int, int]:
    """The transformer's patch grid for the ``(B, C, H, W)`` images ``x``: ``ceil(side / patch_size)``
    (a leaf of FX graphs)."""
    return math.ceil(x.shape[-2] / patch_size), math.ceil(x.shape[-1] / patch_size)


# --------------------------------------------------------------------------------------
# CNN branch
# --------------------------------------------------------------------------------------
class ConvBlock(nn.Module):
    """Bottleneck: 1x1, BN, ReLU, (+ coupling), 3x3 (stride), BN, ReLU, 1x1, BN, + residual, ReLU.

    The coupling map (FCUUp's output, upsampled) is added before the 3x3 conv,
    as in the official code. BN eps is 1e-6 (official).

    Args:
        in_channels (int): Input width.
        out_channels (int): Output width; the bottleneck has a quarter of it.
        stride (int): Stride of the 3x3 conv (and of the residual projection).
        res_conv (bool): Project the residual with 1x1 conv + BN (``residual_conv``,
            ``residual_bn``), needed when the width or the stride changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, res_conv: bool = False):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=1e-6)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=1e-6)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=1e-6)
        if res_conv:
            self.residual_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.residual_bn = nn.BatchNorm2d(out_channels, eps=1e-6)
        else:
            self.residual_conv = self.residual_bn = None

    def forward(self, x: torch.Tensor, fusion: Optional[torch.Tensor] = None,
                fusion_stride: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the block output and the 3x3 conv's activation (FCUDown's input).

        Args:
            x: ``(B, C_in, H, W)``.
            fusion: optional ``(B, C_out / 4, ceil(H / s), ceil(W / s))`` map, added
                nearest-upsampled by ``s = fusion_stride`` before the 3x3 conv.
            fusion_stride: the upsampling factor of ``fusion``.
        """
        out = conv_bn_act(x, self.conv1, self.bn1, relu=True)
        if fusion is not None:
            out = add_upsampled(out, fusion, fusion_stride)
        x2 = conv_bn_act(out, self.conv2, self.bn2, relu=True)
        residual = x if self.residual_conv is None else conv_bn_act(x, self.residual_conv, self.residual_bn)
        return conv_bn_act(x2, self.conv3, self.bn3, relu=True, residual=residual), x2


# --------------------------------------------------------------------------------------
# Coupling units
# --------------------------------------------------------------------------------------
class FCUDown(nn.Module):
    """CNN map -> patch tokens: average pool (s x s) -> 1x1 projection -> LayerNorm -> GELU.

    The official code projects first and pools after; both are the same affine
    map of the pixels. A border patch that is cut by the map's edge averages
    its real pixels.

    Args:
        in_channels (int): Width of the CNN map (the bottleneck width).
        embed_dims (int): Token width.
        dw_stride (int): Pooling size s: CNN pixels per token along each side.
    """

    def __init__(self, in_channels: int, embed_dims: int, dw_stride: int):
        super().__init__()
        self.dw_stride = dw_stride
        self.conv_project = nn.Conv2d(in_channels, embed_dims, 1)
        self.ln = nn.LayerNorm(embed_dims, eps=1e-6)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, ceil(H / s) * ceil(W / s), embed_dims)``."""
        if self.dw_stride > 1:
            x = F.avg_pool2d(x, self.dw_stride, self.dw_stride, ceil_mode=True)
        tokens = x.flatten(2).transpose(1, 2)
        tokens = F.linear(tokens, self.conv_project.weight.flatten(1), self.conv_project.bias)
        return self.act(self.ln(tokens))


class FCUUp(nn.Module):
    """Patch tokens -> CNN-side map on the token grid: 1x1 projection -> BN -> ReLU.

    The nearest upsampling by ``up_stride`` happens where the map is added
    (:func:`add_upsampled`), so the upsampled map is never materialised.

    Args:
        embed_dims (int): Token width.
        out_channels (int): Width of the CNN bottleneck it is added to.
        up_stride (int): CNN pixels per token along each side.
    """

    def __init__(self, embed_dims: int, out_channels: int, up_stride: int):
        super().__init__()
        self.up_stride = up_stride
        self.conv_project = nn.Conv2d(embed_dims, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-6)

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """``(B, h * w, embed_dims)`` patch tokens (no class token) -> ``(B, out_channels, h, w)``."""
        b, (h, w) = tokens.shape[0], grid
        weight, bias = self.conv_project.weight.flatten(1), self.conv_project.bias
        c = weight.shape[0]   # explicit: a -1 cannot be inferred from an empty batch
        if has_hooks(self.conv_project, self.bn):   # the modules themselves, so that their hooks run
            y = tokens.transpose(1, 2).reshape(b, tokens.shape[-1], h, w)
            return self.bn(self.conv_project(y)).relu_()
        if self.bn.training:
            y = F.linear(tokens, weight, bias).view(b, h, w, c).permute(0, 3, 1, 2)
            return self.bn(y).relu_()
        scale, shift = bn_affine(self.bn)
        bias = bias * scale + shift
        y = F.linear(tokens, weight * scale[:, None], bias).relu_()
        return y.view(b, h, w, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------
# Transformer branch
# --------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (official names ``qkv``, ``proj``).

    Args:
        dims (int): Token width.
        num_heads (int): Heads; the scale is ``(dims / num_heads) ** -0.5`` (official).
        qkv_bias (bool): Bias in ``qkv``. Default: True (every official Conformer).
    """

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'embed_dims {dims} is not divisible by num_heads {num_heads}.')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; LN eps 1e-6, exact GELU.

    Args:
        dims (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): MLP hidden width / token width.
        qkv_bias (bool): Bias in the ``qkv`` projection.
        drop_path (float): Stochastic depth rate.
    """

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims, eps=1e-6)
        self.attn = Attention(dims, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dims, eps=1e-6)
        self.mlp = Mlp(dims, int(dims * mlp_ratio))
        # always a module, so a rate of 0 is still visible (and settable) as drop_prob
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------
# Fused block
# --------------------------------------------------------------------------------------
class ConvTransBlock(nn.Module):
    """One Conformer block: a CNN bottleneck and a transformer block, coupled both ways.

    ``cnn_block`` runs; its 3x3 activation becomes patch tokens (``squeeze_block``)
    that are added to the transformer's input, with the class token in front,
    so the class token enters doubled (the official code adds the current class
    token to itself); the transformer's output goes back through
    ``expand_block`` into ``fusion_block``, a second bottleneck. The last block
    of the network has a stride-2 fusion bottleneck (``last_fusion``).

    Args:
        in_channels (int): CNN input width.
        out_channels (int): CNN output width.
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        stride (int): Stride of the CNN bottleneck (2 where a stage starts).
        res_conv (bool): Residual projection in the CNN bottleneck.
        dw_stride (int): CNN pixels per token along each side at this block.
        mlp_ratio (float): MLP ratio of the transformer block.
        qkv_bias (bool): Bias in the ``qkv`` projection.
        drop_path (float): Stochastic depth of the transformer block (the CNN
            branch has none, as in the official code).
        last_fusion (bool): Stride-2 fusion bottleneck with a residual projection.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dims: int, num_heads: int, stride: int,
                 res_conv: bool, dw_stride: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, last_fusion: bool = False):
        super().__init__()
        self.dw_stride = dw_stride
        self.cnn_block = ConvBlock(in_channels, out_channels, stride, res_conv)
        self.fusion_block = (ConvBlock(out_channels, out_channels, 2, res_conv=True) if last_fusion else
                             ConvBlock(out_channels, out_channels))
        self.squeeze_block = FCUDown(out_channels // 4, embed_dims, dw_stride)
        self.expand_block = FCUUp(embed_dims, out_channels // 4, dw_stride)
        self.trans_block = TransformerBlock(embed_dims, num_heads, mlp_ratio, qkv_bias, drop_path)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor,
                grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """CNN map ``x`` and tokens ``x_t`` (class token first) on the token ``grid`` -> both updated."""
        x, x2 = self.cnn_block(x)
        patches = self.squeeze_block(x2)
        x_t = self.trans_block(x_t + torch.cat([x_t[:, :1], patches], dim=1))
        x, _ = self.fusion_block(x, self.expand_block(x_t[:, 1:], grid), self.dw_stride)
        return x, x_t


# --------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------
class ConformerStage(nn.Module):
    """One output stage: fused blocks, after which the stage's CNN map is returned.

    Stage 0 begins with the network's first block, which has no coupling yet: a
    bottleneck on the stem output (``cnn_block``, official ``conv_1``), the patch
    embedding of the stem output (``patch_embed``, official ``trans_patch_conv``)
    and a transformer block on the patch tokens with the class token in front
    (``trans_block``, official ``trans_1``). A container: the backbone runs its
    parts, so that ``with_cp`` applies per block.

    Args:
        blocks (Sequence[ConvTransBlock]): The stage's fused blocks, in order.
        cnn_block (ConvBlock, optional): Stage 0's first bottleneck; None in the other stages.
        patch_embed (nn.Conv2d, optional): Stage 0's patch embedding; None in the other stages.
        trans_block (TransformerBlock, optional): Stage 0's first transformer block; None in the
            other stages.
    """

    def __init__(self, blocks: Sequence[ConvTransBlock], cnn_block: Optional[ConvBlock] = None,
                 patch_embed: Optional[nn.Conv2d] = None, trans_block: Optional[TransformerBlock] = None):
        super().__init__()
        self.cnn_block = cnn_block
        self.patch_embed = patch_embed
        self.trans_block = trans_block
        self.blocks = nn.ModuleList(blocks)


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
@MODELS.register_module()
class Conformer(HybridBackbone):
    """Conformer backbone: the CNN branch's maps at strides 4, 8, 16, 32 (official detection backbone).

    The whole coupled network runs (both branches, both coupling units at every
    block). Stage 0 is the first (uncoupled) block and the fused blocks up to
    ``depth / 3``; stages 1 and 2 end after blocks ``2 * depth / 3`` and
    ``depth - 1`` (C2 and C3 channels); stage 3 is the last block (stride 2,
    C3 channels). With the default depth 12 the maps come after blocks 4, 8,
    11 and 12.

    Layout (the official names in brackets; depth 12):

    * ``conv1``, ``bn1``: the stem (a 7x7 stride-2 conv and its BatchNorm, then
      max-pooling), as in ResNet;
    * ``cls_token``: the transformer branch's class token, as in ViT;
    * ``stages.i``: one :class:`ConformerStage` per output stage. Stage 0 holds
      the first block, ``stages.0.cnn_block`` (``conv_1``), ``stages.0.patch_embed``
      (``trans_patch_conv``) and ``stages.0.trans_block`` (``trans_1``); the fused
      blocks are ``stages.i.blocks.j`` (``conv_trans_2..4`` in stage 0, ``5..8``
      in stage 1, ``9..11`` in stage 2, ``12`` in stage 3);
    * ``out_norms.i``: the optional output norms (not in the official network).

    Args:
        arch (str | dict): 'tiny' (Ti/16), 'small' (S/16), 'small_p32' (S/32, the
            official detection backbone), 'base' (B/16); aliases 't', 's', 's16',
            's32', 'b'. Or a dict with ``patch_size`` (a multiple of 16),
            ``channel_ratio`` (C1 = base_channels * ratio), ``embed_dims``,
            ``num_heads``, optionally ``depth`` (a multiple of 3, at least 6;
            default 12), ``mlp_ratio`` (4) and ``base_channels`` (64).
            Default: 'small_p32'.
        drop_path_rate (float): Stochastic depth of the transformer blocks, linear
            from 0 over all ``depth`` blocks (official). Default: 0.0 (the
            official detection recipe).
        with_tokens (bool): Also return the transformer branch's final tokens, as
            one more item ``(patch_tokens, cls_token)``: the patch tokens as a
            ``(B, embed_dims, ceil(H / patch), ceil(W / patch))`` map and the
            class token ``(B, embed_dims)``, both without a norm. Default: False.
        frozen_stages (int): -1 none, 0 the stem (``conv1``, ``bn1``), k the stem
            and stages 0..k-1 (with stage 0 also ``cls_token``). The official detection code's
            ``frozen_stages=1`` (its recipe) freezes only the stem: here 0.
            Default: -1.
        norm_eval (bool, optional): Keep every BatchNorm in eval mode (frozen
            statistics) while training, as the official detection recipe does.
            Default: None, i.e. frozen from the moment weights are loaded
            (``init_cfg``, ``load_from``, ``load_state_dict``); random BatchNorm
            statistics train, so a backbone trained from scratch learns.
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``, ...): see
            :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'Conformer'
    key = 'conformer'
    converter = staticmethod(convert_conformer)
    arch_zoo = {
        'tiny': dict(patch_size=16, channel_ratio=1, embed_dims=384, num_heads=6),
        'small': dict(patch_size=16, channel_ratio=4, embed_dims=384, num_heads=6),
        'small_p32': dict(patch_size=32, channel_ratio=4, embed_dims=384, num_heads=6),
        'base': dict(patch_size=16, channel_ratio=6, embed_dims=576, num_heads=9),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 's16': 'small', 's32': 'small_p32', 'b': 'base'}
    arch_required = ('patch_size', 'channel_ratio', 'embed_dims', 'num_heads')
    #: how the family appears in timm (see CrossFormer.timm)
    timm = dict(
        variants={'conformer_t_p16': 'tiny', 'conformer_s_p16': 'small', 'conformer_s_p32': 'small_p32',
                  'conformer_b_p16': 'base'},
        first_conv=('conv1', ),
        # official conformer.py: conv_cls_head on the average-pooled last CNN map and
        # trans_cls_head on trans_norm(class token); the reported prediction is their sum.
        # mmpretrain keeps trans_norm in its backbone and the two Linears under head.
        classifier=('conformer', dict(), {'trans_norm': 'trans_norm', 'backbone.trans_norm': 'trans_norm',
                                          'conv_cls_head': 'conv_cls_head', 'trans_cls_head': 'trans_cls_head'}),
        # the official README's counts (S/32 has no published classifier count)
        params={'conformer_t_p16': 23.5, 'conformer_s_p16': 37.7, 'conformer_b_p16': 83.3},
        # the official evaluation (DeiT's): resize 256/224 bicubic, centre crop, ImageNet mean/std
        cfg=dict(crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), paper_ids='arXiv:2105.03889',
                 origin_url='https://github.com/pengzhiliang/Conformer'))
    #: the size the GPU check and the benchmarks time (see CrossFormer.benchmark)
    benchmark = dict(name='Conformer-S/16', cfg=dict(arch='small', norm_eval=True, frozen_stages=0),
                     official='official/conformer_s_p16')
    #: a small arch for fast CPU checks (tests, ``preflight.py --tiny``)
    test_arch = dict(patch_size=16, channel_ratio=1, base_channels=16, embed_dims=32, num_heads=2, depth=6)

    def __init__(self,
                 arch: Union[str, dict] = 'small_p32',
                 drop_path_rate: float = 0.0,
                 with_tokens: bool = False,
                 norm_eval: Optional[bool] = None,
                 **kwargs):
        self.drop_path_rate = drop_path_rate
        self.with_tokens = with_tokens
        super().__init__(arch=arch, norm_eval=norm_eval, **kwargs)

    def build(self, spec: dict) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """The stem (``conv1``, ``bn1``), ``cls_token`` and the stages (``stages``); widths C1, 2 C1, 4 C1,
        4 C1 at strides 4, 8, 16, 32."""
        self.patch_size = spec['patch_size']
        self.embed_dims = spec['embed_dims']
        depth, mlp_ratio = spec.get('depth', 12), spec.get('mlp_ratio', 4)
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f'patch_size must be a multiple of 16 (the token grid is pooled by '
                             f'patch_size / 4, / 8 and / 16 in the three stages), got {self.patch_size}.')
        if depth < 6 or depth % 3:
            raise ValueError(f'depth must be a multiple of 3 and at least 6, got {depth}.')
        self.depth = depth
        c1 = int(spec.get('base_channels', 64) * spec['channel_ratio'])
        dw = self.patch_size // 4   # stem pixels per token along each side
        rates = drop_path_rates(self.drop_path_rate, [depth])[0]

        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.conv1 = nn.Conv2d(self.in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)   # eps 1e-5 here (official), 1e-6 in the blocks

        # the blocks (1..depth, block 1 the uncoupled first one) after which each output stage ends
        self.stage_ends = stage_ends(depth)
        first = dict(cnn_block=ConvBlock(64, c1, res_conv=True),
                     patch_embed=nn.Conv2d(64, self.embed_dims, dw, stride=dw),
                     trans_block=TransformerBlock(self.embed_dims, spec['num_heads'], mlp_ratio, drop_path=rates[0]))
        starts = (2, ) + tuple(end + 1 for end in self.stage_ends[:-1])
        self.stages = nn.ModuleList(
            ConformerStage([self._fused_block(i, c1, spec['num_heads'], mlp_ratio, rates[i - 1])
                            for i in range(start, end + 1)], **(first if k == 0 else {}))
            for k, (start, end) in enumerate(zip(starts, self.stage_ends)))
        return (c1, 2 * c1, 4 * c1, 4 * c1), (4, 8, 16, 32)

    def _fused_block(self, i: int, c1: int, num_heads: int, mlp_ratio: float, drop_path: float) -> ConvTransBlock:
        """Fused block i (2..depth); a width's first block halves the map and doubles the width.

        Args:
            i: the block's number (block 1 is the uncoupled first one).
            c1: the CNN width of stage 0.
            num_heads: attention heads.
            mlp_ratio: MLP ratio of the transformer block.
            drop_path: its stochastic depth rate.
        """
        per_stage = self.depth // 3
        width_index = (i - 1) // per_stage  # 0, 1, 2 for the three widths
        width = c1 * 2**width_index
        widens = i == width_index * per_stage + 1 and width_index > 0
        return ConvTransBlock(
            width // 2 if widens else width, width, self.embed_dims, num_heads, stride=2 if widens else 1,
            res_conv=widens, dw_stride=self.patch_size // 4 // 2**width_index, mlp_ratio=mlp_ratio,
            drop_path=drop_path, last_fusion=i == self.depth)

    # -- structure --------------------------------------------------------------------
    def blocks(self) -> List[ConvTransBlock]:
        """The fused blocks (official ``conv_trans_2 .. conv_trans_{depth}``) in order."""
        return [block for stage in self.stages for block in stage.blocks]

    def stem_modules(self) -> List[nn.Module]:
        return [self.conv1, self.bn1]

    def stage_modules(self) -> List[nn.Module]:
        return list(self.stages)

    def legacy_key(self, key: str) -> Optional[str]:
        """Earlier mmhybrid versions kept the official names (``conv_1``, ``trans_patch_conv``,
        ``trans_1``, ``conv_trans_{i}``)."""
        new = official_to_layout(key, self.depth)
        return new if new != key else None

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 1:   # the class token is stage 0's, a parameter outside its modules
            self.cls_token.requires_grad = False

    def _default_init(self) -> None:
        """The official initialisation (timm ViT for the tokens, kaiming fan-out for the convs)."""
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple:
        """``(B, C, H, W)`` -> maps of ``ceil(H / s) x ceil(W / s)`` for the stages in ``out_indices``
        (and, with ``with_tokens``, ``(patch_tokens, cls_token)`` last)."""
        self.check_input(x)
        b = x.shape[0]
        x = x.contiguous(memory_format=torch.channels_last)
        grid = token_grid(x, self.patch_size)   # = ceil(stem output / (patch / 4))
        x_base = F.max_pool2d(conv_bn_act(x, self.conv1, self.bn1), 3, 2, 1).relu_()
        dw = self.patch_size // 4

        first = self.stages[0]
        x = self.run_block(first.cnn_block, x_base)[0]
        x_t = first.patch_embed(pad_bottom_right(x_base, dw, dw)).flatten(2).transpose(1, 2)
        x_t = self.run_block(first.trans_block, torch.cat([self.cls_token.expand(b, -1, -1), x_t], dim=1))
        outs = []
        # no stage after the last output stage, unless the final tokens are wanted
        last = len(self.stages) - 1 if self.with_tokens else self.out_indices[-1]
        for i in range(last + 1):
            for block in self.stages[i].blocks:
                x, x_t = self.run_block(block, x, x_t, grid)
            if i in self.out_indices:
                outs.append(x.contiguous())
        if self.with_tokens:
            patches = x_t[:, 1:].transpose(1, 2).reshape(b, self.embed_dims, grid[0], grid[1])
            outs.append((patches, x_t[:, 0]))
        return self.finish_outputs(outs)
