"""CrossFormer (Wang et al., ICLR 2022) as a dense-prediction backbone.

Reads top-down: grouping geometry (pure functions, cached per input shape),
dynamic position bias, group attention, block, cross-scale embedding and
merging, stage, backbone.

Differences from the official dense code that do not change its results:

* any input size: the image is padded to a multiple of 4 and odd maps are
  padded before each merging layer, so outputs are ``ceil(H / stride)``;
* padded keys are left out of attention instead of being masked with -1e6, by
  running fused attention separately on the (at most a few) runs of groups that
  share the same number of valid key rows/columns;
* the small-map rule (group = the map when ``min(H, W) <= group_size``) is
  decided per call and never written into the module.
"""
import weakref
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints.converters.crossformer import convert_crossformer
from ..registry import MODELS
from .base import HybridBackbone, per_stage
from .kernels import biased_attention
from .layers import (DropPath, Mlp, being_traced, drop_path_rates, fx_leaf, has_hooks, pad_bottom_right,
                     trunc_normal_init)

# Shape-dependent Python runs as leaves of FX graphs (``fx_leaf``: torch.fx / torchvision
# feature extraction record a call, executed when the graph runs), so a traced model works
# at any input size: the padding, the groupings of a stage, the position tables and the
# attention over the groups (its loop runs over the runs of groups of the current size).

# --------------------------------------------------------------------------------------
# Grouping geometry
# --------------------------------------------------------------------------------------
# Along one axis of length L, a grouping is (outer R, inner G, interval I): position
# p = r*G*I + g*I + i belongs to group row (r, i) at within-group coordinate g.
#   SDA:                 (ceil(L/G), G, 1)       contiguous windows of G
#   LDA, original:       (1, ceil(L/I), I)       I interleaved sub-grids over the map
#   LDA, fixed groups:   (ceil(L/(G*I)), G, I)   dilated groups of G with step I
# Padding sits at the end of the axis, so a group's valid positions are always a
# prefix of its G coordinates; groups are batched by that prefix length.


@lru_cache(maxsize=256)
def _axis_grouping(length: int, mode: str, group: int, interval: int) -> Tuple[int, int, int]:
    if mode == 'sda':
        return -(-length // group), group, 1
    if mode == 'interval':
        return 1, -(-length // interval), interval
    if mode == 'dilated':
        return -(-length // (group * interval)), group, interval
    raise ValueError(f'unknown grouping mode {mode!r}')


@lru_cache(maxsize=256)
def _valid_runs(length: int, outer: int, inner: int, interval: int) -> Tuple[Tuple[int, int, int], ...]:
    """Runs ``(start, end, valid)`` of consecutive group rows with equal valid prefix length."""
    runs: List[List[int]] = []
    for r in range(outer):
        for i in range(interval):
            first = r * inner * interval + i
            valid = min(inner, max(0, -(-(length - first) // interval)))
            row = r * interval + i
            if runs and runs[-1][2] == valid:
                runs[-1][1] = row + 1
            else:
                runs.append([row, row + 1, valid])
    return tuple(tuple(run) for run in runs)


class Grouping:
    """How one attention call splits an ``H x W`` map into groups (per shape, cached).

    Args:
        height, width: the map size.
        mode: 'sda', 'interval' or 'dilated'.
        group: group size G (SDA window, dilated group).
        interval: LDA interval I.
    """

    def __init__(self, height: int, width: int, mode: str, group: int, interval: int):
        self.height, self.width = height, width
        self.h = _axis_grouping(height, mode, group, interval)
        self.w = _axis_grouping(width, mode, group, interval)
        self.runs_h = _valid_runs(height, *self.h)
        self.runs_w = _valid_runs(width, *self.w)

    @property
    def group_shape(self) -> Tuple[int, int]:
        return self.h[1], self.w[1]

    @property
    def padded(self) -> Tuple[int, int]:
        return self.h[0] * self.h[1] * self.h[2], self.w[0] * self.w[1] * self.w[2]


#: the window side of the small-map rule: the v1 dense backbone's square windows of the
#: shorter side, or the main-branch (CrossFormer++) one square group of the longer side
SMALL_MAP_SIDE = {'shorter': min, 'longer': max}


@fx_leaf
def stage_groupings(x: torch.Tensor, group: int, interval: int, lda: str,
                    small_maps: str = 'shorter') -> Tuple[Grouping, Grouping]:
    """:func:`block_groupings` for the ``(B, H, W, C)`` tokens ``x`` of a stage (a leaf of FX graphs)."""
    return block_groupings(x.shape[1], x.shape[2], group, interval, lda, small_maps)


@lru_cache(maxsize=256)
def block_groupings(height: int, width: int, group: int, interval: int, lda: str,
                    small_maps: str = 'shorter') -> Tuple[Grouping, Grouping]:
    """The (SDA, LDA) groupings of one stage for an ``height x width`` map.

    When ``min(H, W) <= group`` both kinds of block do SDA with square windows of
    side ``min(H, W)`` (``small_maps='shorter'``, the official v1 dense backbone's
    rule) or ``max(H, W)`` (``'longer'``: one group covering the map, the
    main-branch code behind CrossFormer++).
    """
    if min(height, width) <= group:
        small = Grouping(height, width, 'sda', SMALL_MAP_SIDE[small_maps](height, width), 1)
        return small, small
    return (Grouping(height, width, 'sda', group, 1),
            Grouping(height, width, lda, group, interval))


# --------------------------------------------------------------------------------------
# Dynamic position bias
# --------------------------------------------------------------------------------------
@fx_leaf
def relative_position_tables(gh: int, gw: int, device: torch.device,
                             dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """The tables of :func:`_relative_position_tables`, cached in eager mode only.

    Under a tracer's fake-tensor mode (``torch.export``, ``torch.compile``) the
    tensors made are placeholders: they are made afresh and never cached, so
    later eager calls and exports get real tensors.
    """
    if torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None:
        return _relative_position_tables.__wrapped__(gh, gw, device, dtype)
    return _relative_position_tables(gh, gw, device, dtype)


@lru_cache(maxsize=128)
def _relative_position_tables(gh: int, gw: int, device: torch.device,
                              dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Offsets ``((2gh-1)(2gw-1), 2)`` in ``dtype`` fed to the bias MLP, and the index of each (query, key) pair.

    The tensors are cached and shared by every later call, whatever its mode, so
    they are made as ordinary tensors even when the first call runs under
    ``torch.inference_mode()`` (an inference tensor could never be saved for a
    backward pass, and ``table[index]`` saves ``index``). Neither ``no_grad`` nor
    autocast changes what is made here (no parameters, no autocast ops).
    """
    with torch.inference_mode(False):
        dh = torch.arange(1 - gh, gh, device=device)
        dw = torch.arange(1 - gw, gw, device=device)
        offsets = torch.stack(torch.meshgrid(dh, dw, indexing='ij'), dim=-1).reshape(-1, 2).to(dtype)
        coords = torch.stack(torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device),
                                            indexing='ij'), dim=-1).reshape(-1, 2)
        rel = coords[:, None, :] - coords[None, :, :]
        index = (rel[..., 0] + gh - 1) * (2 * gw - 1) + (rel[..., 1] + gw - 1)
        return offsets, index.reshape(-1)


#: module -> {key: bias}: inference biases of each position-bias MLP (see DynamicPosBias.forward)
_BIAS_CACHE: 'weakref.WeakKeyDictionary[nn.Module, dict]' = weakref.WeakKeyDictionary()


def _bias_cache_key(module: nn.Module, group_shape: Tuple[int, int], device: torch.device) -> Optional[tuple]:
    """What an inference bias depends on, or None where it must be computed afresh: with autograd on,
    while traced or compiled (placeholders), or when a submodule has hooks (they must run).

    The weights count by storage and version counter, which every in-place change (an optimizer step,
    ``load_state_dict``) bumps; the autocast dtype by the current autocast state.
    """
    if (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None
            or not isinstance(device, torch.device)):   # an FX proxy while torch.fx traces
        return None
    params = list(module.parameters())
    if being_traced(params[0]) or has_hooks(*module.modules()):
        return None
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    return (tuple(group_shape), device, amp, tuple((p.data_ptr(), p._version, p.dtype) for p in params))


class DynamicPosBias(nn.Module):
    """An MLP from relative offsets ``(dh, dw)`` to one bias per head.

    Args:
        pos_dims (int): Hidden width (the official code uses stage width // 16).
        num_heads (int): Number of attention heads.
    """

    def __init__(self, pos_dims: int, num_heads: int):
        super().__init__()
        self.pos_proj = nn.Linear(2, pos_dims)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dims), nn.ReLU(inplace=True), nn.Linear(pos_dims, pos_dims))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dims), nn.ReLU(inplace=True), nn.Linear(pos_dims, pos_dims))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dims), nn.ReLU(inplace=True), nn.Linear(pos_dims, num_heads))

    def forward(self, group_shape: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """Bias ``(heads, gh, gw, gh, gw)`` for queries and keys of one group.

        Without autograd (inference) the bias of a group shape is made once and reused (see
        :func:`_bias_cache_key`): it depends only on the shape, the weights and the autocast dtype.
        """
        key = _bias_cache_key(self, group_shape, device)
        if key is None:
            return self._compute(group_shape, device)
        cache = _BIAS_CACHE.setdefault(self, {})
        if key not in cache:
            if len(cache) >= 8:   # a few shapes at a time (one per stage kind and input size)
                cache.pop(next(iter(cache)))
            cache[key] = self._compute(group_shape, device)
        return cache[key]

    def _compute(self, group_shape: Tuple[int, int], device: torch.device) -> torch.Tensor:
        gh, gw = group_shape
        # the offsets in the MLP's dtype (fp32, fp64, bf16, ...; autocast casts them as usual)
        offsets, index = relative_position_tables(gh, gw, device, self.pos_proj.weight.dtype)
        table = self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))  # (T, heads)
        # gathered head-major, so the bias is contiguous: the attention adds it to every group's
        # scores, and those adds (and so CPU training) are slower on a bias strided by the head count
        return table.t().contiguous().index_select(1, index).reshape(-1, gh, gw, gh, gw)


# --------------------------------------------------------------------------------------
# Attention, block
# --------------------------------------------------------------------------------------
class GroupAttention(nn.Module):
    """Multi-head self-attention inside groups, with dynamic position bias.

    Args:
        dims (int): Token width.
        num_heads (int): Number of heads.
        qkv_bias (bool): Bias in the fused qkv projection.
    """

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'width {dims} is not divisible by {num_heads} heads.')
        self.num_heads = num_heads
        self.pos = DynamicPosBias(dims // 16 if dims >= 16 else 1, num_heads)
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor, grouping: Grouping) -> torch.Tensor:
        """``x``: ``(B, H, W, C)`` normalised tokens; returns the same shape."""
        # the projection runs on the valid tokens only: padding is added after it (see grouped_attention)
        bias = self.pos(grouping.group_shape, x.device)
        return self.proj(grouped_attention(self.qkv(x), bias, grouping, self.num_heads))


# False: grouped_attention always runs plain SDPA (on CPU its math kernel when the bias is trained)
CHUNKED_BIAS_ATTENTION = True


@fx_leaf
def grouped_attention(qkv: torch.Tensor, bias: torch.Tensor, grouping: Grouping, heads: int) -> torch.Tensor:
    """Attention inside the groups of ``grouping`` (a leaf of FX graphs).

    Args:
        qkv: ``(B, H, W, 3C)`` projected tokens.
        bias: ``(heads, gh, gw, gh, gw)`` position bias of one group.
        grouping: the grouping of the ``H x W`` map.
        heads: number of heads.

    Returns:
        ``(B, H, W, C)`` attention outputs, before the output projection.

    The attention runs through ``kernels.biased_attention``: on CPU, where the position bias
    is trained, a chunked forward and backward instead of SDPA's math kernel, which keeps
    every score matrix for the backward, and in inference the faster of the chunked forward
    and SDPA's fused kernel; on CUDA, in tracing/export and with ``CHUNKED_BIAS_ATTENTION =
    False`` (module switch, e.g. for tests) it is ``F.scaled_dot_product_attention``.
    """
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    hd = c // heads
    (rh, gh, ih), (rw, gw, iw) = grouping.h, grouping.w
    hp, wp = grouping.padded
    # Padded positions never act as keys, and padded queries are cropped, so the
    # padding value is irrelevant.
    qkv = pad_bottom_right(qkv, hp, wp, channels_last=True)
    qkv = qkv.reshape(b, rh, gh, ih, rw, gw, iw, 3, heads, hd)
    qkv = qkv.permute(7, 0, 1, 3, 4, 6, 8, 2, 5, 9).reshape(3, b, rh * ih, rw * iw, heads, gh, gw, hd)
    bias = bias.to(qkv.dtype)  # the queries' dtype (autocast's under autocast)

    # The runs partition the group rows and columns in order: split (whose backward is one
    # concatenation) rather than slice (one zero-filled full-size gradient added up per run).
    rows = []
    row_blocks = qkv.split([ye - ys for ys, ye, _ in grouping.runs_h], dim=2)
    for (ys, ye, vh), row_block in zip(grouping.runs_h, row_blocks):
        cols = []
        col_blocks = row_block.split([xe - xs for xs, xe, _ in grouping.runs_w], dim=3)
        for (xs, xe, vw), block in zip(grouping.runs_w, col_blocks):
            q, k, v = block.unbind(0)
            n_groups = b * (ye - ys) * (xe - xs)
            if vh == 0 or vw == 0:  # groups made only of padding (cropped below)
                cols.append(q.new_zeros(q.shape))
                continue
            q = q.reshape(n_groups, heads, gh * gw, hd)
            k = k[..., :vh, :vw, :].reshape(n_groups, heads, vh * vw, hd)
            v = v[..., :vh, :vw, :].reshape(n_groups, heads, vh * vw, hd)
            mask = bias[..., :vh, :vw].reshape(1, heads, gh * gw, vh * vw)
            if CHUNKED_BIAS_ATTENTION:
                out = biased_attention(q, k, v, mask)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            cols.append(out.reshape(b, ye - ys, xe - xs, heads, gh, gw, hd))
        rows.append(cols[0] if len(cols) == 1 else torch.cat(cols, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
    out = out.reshape(b, rh, ih, rw, iw, heads, gh, gw, hd)
    out = out.permute(0, 1, 6, 2, 3, 7, 4, 5, 8)
    if being_traced(out):   # torch.export's reshape decomposition takes this permutation for a view
        out = out.clone(memory_format=torch.contiguous_format)
    # contiguous: on a strided view the output projection runs as a bmm over a per-row weight copy
    return out.reshape(b, hp, wp, c)[:, :h, :w].contiguous()


class CrossFormerBlock(nn.Module):
    """Pre-norm block: group attention (SDA or LDA) then MLP, each with a residual.

    Args:
        dims (int): Token width.
        num_heads (int): Number of heads.
        mlp_ratio (float): MLP hidden width / token width.
        drop_path (float): Stochastic depth rate.
    """

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attn = GroupAttention(dims, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = Mlp(dims, int(dims * mlp_ratio))

    def forward(self, x: torch.Tensor, grouping: Grouping) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grouping))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------
# Cross-scale embedding and merging
# --------------------------------------------------------------------------------------
def _split_channels(total: int, n: int) -> List[int]:
    """Kernel i < n-1 gets total / 2^(i+1), the last total / 2^(n-1) (96 -> 48/24/12/12)."""
    return [total // 2**(i + 1) for i in range(n - 1)] + [total // 2**(n - 1)]


class CrossScaleEmbedding(nn.Module):
    """Stem: convolutions of several kernel sizes, same stride, concatenated, then LayerNorm.

    Args:
        in_channels (int): Image channels.
        embed_dims (int): Output width.
        kernel_sizes (Sequence[int]): Kernels, smallest first. Default: (4, 8, 16, 32).
        stride (int): Stride of every kernel. Default: 4.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_sizes: Sequence[int] = (4, 8, 16, 32),
                 stride: int = 4):
        super().__init__()
        self.stride = stride
        self.projs = nn.ModuleList(
            nn.Conv2d(in_channels, dims, k, stride=stride, padding=(k - stride) // 2)
            for k, dims in zip(kernel_sizes, _split_channels(embed_dims, len(kernel_sizes))))
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> ``(B, ceil(H/4), ceil(W/4), D)`` tokens."""
        x = pad_bottom_right(x, self.stride, self.stride)
        x = torch.cat([embed_conv(proj, x) for proj in self.projs], dim=1)
        return self.norm(x.permute(0, 2, 3, 1))


@fx_leaf
def embed_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a stem convolution of stride s and kernel k = m * s, with padding
    (k - s) / 2, on ``x`` whose sides are multiples of s.

    On CPU a kernel of at least 4 s (CrossFormer's 16 and 32) runs as the same sums
    rearranged: a stride-1 convolution with kernel m over the space-to-depth image
    (``pixel_unshuffle`` by s: s * s times the channels). oneDNN computes the weight
    gradient of a large strided kernel over 3 channels slowly: this form trains the
    32 x 32 kernel several times faster. The parameters are the convolution's own;
    hooks on it see the call as usual (and an empty batch, which ``pixel_unshuffle``
    returns unchanged, takes ``conv``). A leaf of FX graphs (``fx_leaf``).
    """
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if (x.device.type != 'cpu' or x.shape[0] == 0 or k < 4 * s or k % s or 2 * p != k - s or conv.kernel_size[1] != k
            or conv.stride[1] != s or conv.padding[1] != p or has_hooks(conv)):
        return conv(x)
    m, w = k // s, conv.weight
    w = w.reshape(w.shape[0], w.shape[1], m, s, m, s).permute(0, 1, 3, 5, 2, 4).reshape(w.shape[0], -1, m, m)
    return F.conv2d(F.pixel_unshuffle(F.pad(x, (p, p, p, p)), s), w, conv.bias)


class CrossScaleMerging(nn.Module):
    """Between stages: LayerNorm, then stride-2 convolutions of kernels 2 and 4, concatenated.

    Args:
        in_dims (int): Input width C.
        out_dims (int): Output width (2C).
        kernel_sizes (Sequence[int]): Kernels, smallest first. Default: (2, 4).
    """

    def __init__(self, in_dims: int, out_dims: int, kernel_sizes: Sequence[int] = (2, 4)):
        super().__init__()
        self.norm = nn.LayerNorm(in_dims)
        self.reductions = nn.ModuleList(
            nn.Conv2d(in_dims, dims, k, stride=2, padding=(k - 2) // 2)
            for k, dims in zip(kernel_sizes, _split_channels(out_dims, len(kernel_sizes))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        x = pad_bottom_right(self.norm(x).permute(0, 3, 1, 2), 2, 2)
        return torch.cat([red(x) for red in self.reductions], dim=1).permute(0, 2, 3, 1)


class CrossFormerStage(nn.Module):
    """Blocks alternating SDA (even index) and LDA (odd), then optional merging.

    Args:
        dims (int): Token width.
        depth (int): Number of blocks.
        num_heads (int): Number of heads.
        group_size (int): SDA window / LDA group size G.
        interval (int): LDA interval I.
        drop_paths (Sequence[float]): Stochastic depth per block.
        mlp_ratio (float): MLP hidden width / token width.
        merge_kernels (Sequence[int], optional): Kernels of the merging layer to
            ``2 * dims`` at the end; None for the last stage.
        block_type (type): The block class, called as ``block_type(dims, num_heads,
            mlp_ratio, drop_path, **kwargs)``. Default: :class:`CrossFormerBlock`.
        block_kwargs (Sequence[dict], optional): Further arguments of each block
            (CrossFormer++: where the activation cooling layers are).
    """

    def __init__(self, dims: int, depth: int, num_heads: int, group_size: int, interval: int,
                 drop_paths: Sequence[float], mlp_ratio: float = 4.0,
                 merge_kernels: Optional[Sequence[int]] = None,
                 block_type: Callable[..., nn.Module] = CrossFormerBlock,
                 block_kwargs: Optional[Sequence[dict]] = None):
        super().__init__()
        self.group_size, self.interval = group_size, interval
        block_kwargs = block_kwargs or [{}] * depth
        self.blocks = nn.ModuleList(
            block_type(dims, num_heads, mlp_ratio, drop_paths[i], **block_kwargs[i]) for i in range(depth))
        self.downsample = CrossScaleMerging(dims, 2 * dims, merge_kernels) if merge_kernels else None


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
class CrossFormerNetwork(HybridBackbone):
    """The network of CrossFormer and CrossFormer++: cross-scale embedding, then stages of
    alternating SDA/LDA blocks joined by cross-scale merging; its construction, random
    init and forward.

    Not a family itself (no ``key``, not registered): :class:`CrossFormer` and
    ``CrossFormerPP`` derive from it and say what differs, as class attributes or
    constructor arguments: the LDA mode (``lda``), the small-map rule (``small_maps``),
    the block class (``block_type``) and further block arguments
    (:meth:`block_kwargs`).

    Args:
        arch (str | dict): A name of the family's ``arch_zoo`` (or an alias), or a dict
            with ``embed_dims``, ``depths``, ``num_heads``.
        group_size (int | Sequence[int]): Group size G per stage.
        interval (int | Sequence[int]): LDA interval I per stage.
        mlp_ratio (float): MLP hidden width / token width.
        patch_kernels (Sequence[int]): Cross-scale embedding kernels.
        merge_kernels (Sequence[int]): Cross-scale merging kernels.
        drop_path_rate (float): Stochastic depth, linear over all blocks.
        lda (str, optional): The LDA grouping, 'interval' or 'dilated'; None: the class's ``lda``.
        **kwargs: The arguments of every family: see :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    #: LDA grouping: 'interval' (the I x I sub-grids of the map) or 'dilated' (G x G groups with step I)
    lda: str
    #: the small-map rule (:func:`block_groupings`): 'shorter' or 'longer'
    small_maps: str
    #: the block class of every stage (see :class:`CrossFormerStage`)
    block_type: Callable[..., nn.Module] = CrossFormerBlock

    def __init__(self, arch: Union[str, dict], group_size: Union[int, Sequence[int]],
                 interval: Union[int, Sequence[int]], mlp_ratio: float, patch_kernels: Sequence[int],
                 merge_kernels: Sequence[int], drop_path_rate: float, lda: Optional[str] = None, **kwargs):
        if lda is not None:
            self.lda = lda
        self.group_size, self.interval, self.mlp_ratio = group_size, interval, mlp_ratio
        self.patch_kernels, self.merge_kernels = patch_kernels, merge_kernels
        self.drop_path_rate = drop_path_rate
        super().__init__(arch=arch, **kwargs)

    def block_kwargs(self, index: int, depth: int) -> dict:
        """Further arguments of block ``index`` of a stage of ``depth`` blocks (here none)."""
        return {}

    def build(self, spec: dict) -> Tuple[List[int], List[int]]:
        """Make ``patch_embed`` and the stages (``layers``).

        Args:
            spec: the resolved arch (``embed_dims``, ``depths``, ``num_heads``).

        Returns:
            The stage widths ``embed_dims * 2^i`` and strides ``4 * 2^i``.
        """
        depths, heads = tuple(spec['depths']), tuple(spec['num_heads'])
        num_stages = len(depths)
        if len(heads) != num_stages:
            raise ValueError(f'depths {depths} and num_heads {heads} differ in length.')
        groups = per_stage(self.group_size, num_stages, 'group_size')
        intervals = per_stage(self.interval, num_stages, 'interval')
        dims = [spec['embed_dims'] * 2**i for i in range(num_stages)]

        self.patch_embed = CrossScaleEmbedding(self.in_channels, dims[0], self.patch_kernels)
        self.layers = nn.ModuleList()
        for i, dpr in enumerate(drop_path_rates(self.drop_path_rate, depths)):
            self.layers.append(CrossFormerStage(
                dims[i], depths[i], heads[i], groups[i], intervals[i], dpr, self.mlp_ratio,
                self.merge_kernels if i < num_stages - 1 else None, self.block_type,
                [self.block_kwargs(j, depths[i]) for j in range(depths[i])]))
        return dims, [4 * 2**i for i in range(num_stages)]

    def _default_init(self) -> None:
        # Linear layers truncated normal, LayerNorms identity; convolutions keep PyTorch's default
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, C, H, W)`` -> maps of size ``ceil(H / s) x ceil(W / s)`` for the stages in ``out_indices``."""
        self.check_input(x)
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            groupings = stage_groupings(x, stage.group_size, stage.interval, self.lda, self.small_maps)  # SDA, LDA
            for j, block in enumerate(stage.blocks):
                x = self.run_block(block, x, groupings[j % 2])
            if i in self.out_indices:
                outs.append(x.permute(0, 3, 1, 2).contiguous())
            if i == self.out_indices[-1]:  # later stages would be computed for nothing
                break
            if stage.downsample is not None:
                x = stage.downsample(x)
        return self.finish_outputs(outs)


@MODELS.register_module()
class CrossFormer(CrossFormerNetwork):
    """CrossFormer backbone returning multi-scale NCHW maps (strides 4, 8, 16, 32).

    Args:
        arch (str | dict): 'tiny', 'small', 'base', 'large' (or 't', 's', 'b', 'l'),
            or a dict with ``embed_dims``, ``depths``, ``num_heads``.
        group_size (int | Sequence[int]): Group size G per stage. Default: 7.
        interval (int | Sequence[int]): LDA interval I per stage. Default: (8, 4, 2, 1).
        lda (str): 'interval' (default): the original dense backbone's LDA, groups are
            the I x I interleaved sub-grids of the whole map (used for the released
            COCO/ADE20K results); 'dilated': the later fixed G x G groups sampled
            with step I.
        mlp_ratio (float): MLP hidden width / token width. Default: 4.
        patch_kernels (Sequence[int]): Cross-scale embedding kernels. Default: (4, 8, 16, 32).
        merge_kernels (Sequence[int]): Cross-scale merging kernels. Default: (2, 4).
        drop_path_rate (float): Stochastic depth, linear over all blocks. Default: 0.2.
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``, ...): see
            :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'CrossFormer'
    key = 'crossformer'
    converter = staticmethod(convert_crossformer)
    arch_zoo = {
        'tiny': dict(embed_dims=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16)),
        'small': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        'base': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'large': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
    arch_required = ('embed_dims', 'depths', 'num_heads')
    #: why an exported graph takes one input size only (tools/deployment/export_onnx.py --dynamic)
    export_fixed_size = ('its attention groups, their padding and the position-bias tables are laid out for '
                         'the map size')
    #: how the family appears in timm (``mmhybrid.timm_models``): names -> arch, the convolutions that read
    #: the image, the official classifier (kind, arguments, official module -> classifier module), the
    #: published parameter counts with it, and the official evaluation's data config
    timm = dict(
        variants={'crossformer_t': 'tiny', 'crossformer_s': 'small', 'crossformer_b': 'base', 'crossformer_l': 'large'},
        first_conv=tuple(f'patch_embed.projs.{i}' for i in range(4)),
        # official models/crossformer.py: norm (nn.LayerNorm) -> avgpool -> head (Linear)
        classifier=('pool', dict(norm_eps=1e-5), {'norm': 'norm', 'head': 'fc'}),
        params={'crossformer_t': 27.8, 'crossformer_s': 30.7, 'crossformer_b': 52.0, 'crossformer_l': 92.0},
        # Swin-style evaluation of the official repo: resize 256/224, centre crop, bicubic
        cfg=dict(crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 origin_url='https://github.com/cheerss/CrossFormer', paper_ids='arXiv:2108.00154'))
    #: the size the GPU check and the benchmarks time, and its official implementation in the side-by-side bench
    benchmark = dict(name='CrossFormer-S', cfg=dict(arch='small'), official='official/crossformer_s')
    #: a small arch with every kind of block, for fast CPU checks (tests, ``preflight.py --tiny``): a block
    #: pair (SDA, then LDA) in the stages whose maps exceed the group size at test sizes
    test_arch = dict(embed_dims=32, depths=(2, 2, 1, 1), num_heads=(1, 2, 4, 8))
    lda_modes = ('interval', 'dilated')
    #: the small-map rule (:func:`block_groupings`): the v1 dense backbone's windows of the shorter side
    small_maps = 'shorter'

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 group_size: Union[int, Sequence[int]] = 7,
                 interval: Union[int, Sequence[int]] = (8, 4, 2, 1),
                 lda: str = 'interval',
                 mlp_ratio: float = 4.0,
                 patch_kernels: Sequence[int] = (4, 8, 16, 32),
                 merge_kernels: Sequence[int] = (2, 4),
                 drop_path_rate: float = 0.2,
                 **kwargs):
        super().__init__(arch, group_size, interval, mlp_ratio, patch_kernels, merge_kernels, drop_path_rate,
                         lda=lda, **kwargs)

    def build(self, spec: dict) -> Tuple[List[int], List[int]]:
        """Refuse an unknown ``lda``, then build the network (see :meth:`CrossFormerNetwork.build`)."""
        if self.lda not in self.lda_modes:
            raise ValueError(f'lda must be one of {self.lda_modes}, got {self.lda!r}.')
        return super().build(spec)
