"""CvT (Wu et al., ICCV 2021) as a dense-prediction backbone.

Reads top-down: convolutional token embedding, convolutional projection,
attention, MLP, block, stage, backbone. Module and parameter names are the
official ones (``stage{i}.patch_embed.*``, ``stage{i}.blocks.{j}.attn.conv_proj_q.*``,
``stage2.cls_token``, ...), so official checkpoints load after dropping the head.

Differences from the official (classification) code that do not change its
results where it runs:

* attention runs in ``scaled_dot_product_attention`` (a fused, memory-efficient
  kernel on CPU and GPU) with the official scale, stage width ** -0.5, passed
  explicitly; the official code materialises every (query, key) score, which at
  800x1216 is 60800 x 15200 floats per block in stage 0;
* any input size: the image is zero-padded at the bottom/right to a multiple of 4,
  so the outputs are ``ceil(H / stride)``; the official stride-4 embedding drops
  the last rows/columns of other sizes instead (equal outputs for multiples of 4);
* BatchNorm layers in eval mode (inference, or training with ``norm_eval``) are
  folded into their depthwise convolution at each call: the same affine map,
  one pass over the map instead of two;
* optional stride-32 level (``extra_stage``), off by default; see :class:`CvT`.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_

from ..checkpoints import CheckpointMismatchError
from ..checkpoints.converters.cvt import convert_cvt
from ..registry import MODELS
from .base import HybridBackbone
from .kernels import attention, conv_bn
from .layers import DropPath, Mlp, fx_leaf, pad_bottom_right, trunc_normal_init


# --------------------------------------------------------------------------------------
# Convolutional token embedding
# --------------------------------------------------------------------------------------
class ConvEmbed(nn.Module):
    """Overlapping strided convolution, then LayerNorm over channels (``proj``, ``norm``).

    Args:
        in_channels (int): Input width.
        embed_dims (int): Output width.
        kernel_size (int): Kernel (official: 7 for the image, 3 between stages).
        stride (int): Stride (4 for the image, 2 between stages).
        padding (int): Zero padding (2, then 1).
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> tokens ``(B, H', W', D)``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


# --------------------------------------------------------------------------------------
# Attention with convolutional projections
# --------------------------------------------------------------------------------------
class ConvProjection(nn.Module):
    """Depthwise 3x3 convolution (no bias) and BatchNorm: the official ``dw_bn`` projection.

    Args:
        dims (int): Width.
        stride (int): 1 for queries, 2 for keys and values.
        kernel_size (int): Depthwise kernel. Default: 3.
    """

    def __init__(self, dims: int, stride: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dims, dims, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=dims, bias=False)
        self.bn = nn.BatchNorm2d(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` map -> ``(B, H'W', C)`` tokens."""
        return conv_bn(x, self.conv, self.bn).flatten(2).transpose(1, 2)


class ConvAttention(nn.Module):
    """Global multi-head attention whose q, k, v come from depthwise-conv projections.

    The token map (without the class token) goes through ``conv_proj_q`` (stride 1)
    and ``conv_proj_k``/``conv_proj_v`` (stride 2, so 4x fewer keys); the class
    token, when there is one, is put in front of all three untouched; then
    separate linear ``proj_q``/``proj_k``/``proj_v``, softmax attention over every
    key, and ``proj``.

    Args:
        dims (int): Token width.
        num_heads (int): Number of heads.
        qkv_bias (bool): Bias in the q/k/v linears. Default: True (every released model).
        kernel_size (int): Depthwise kernel of the projections. Default: 3.
        stride_kv (int): Stride of the key/value projections. Default: 2.
    """

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = True, kernel_size: int = 3,
                 stride_kv: int = 2):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'width {dims} is not divisible by {num_heads} heads.')
        self.num_heads = num_heads
        # the official scale uses the whole width, not the head width
        self.scale = dims**-0.5
        self.conv_proj_q = ConvProjection(dims, 1, kernel_size)
        self.conv_proj_k = ConvProjection(dims, stride_kv, kernel_size)
        self.conv_proj_v = ConvProjection(dims, stride_kv, kernel_size)
        self.proj_q = nn.Linear(dims, dims, bias=qkv_bias)
        self.proj_k = nn.Linear(dims, dims, bias=qkv_bias)
        self.proj_v = nn.Linear(dims, dims, bias=qkv_bias)
        self.proj = nn.Linear(dims, dims)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], num_cls: int) -> torch.Tensor:
        """``x``: ``(B, num_cls + H*W, C)`` normalised tokens; returns the same shape."""
        cls, tokens = x[:, :num_cls], x[:, num_cls:]
        fmap = tokens.unflatten(1, hw).permute(0, 3, 1, 2)  # NCHW view in channels_last layout
        q, k, v = self.conv_proj_q(fmap), self.conv_proj_k(fmap), self.conv_proj_v(fmap)
        if num_cls:
            q, k, v = (torch.cat([cls, t], dim=1) for t in (q, k, v))
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        out = attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).flatten(2))


class _QuickGELUFunction(torch.autograd.Function):
    """QuickGELU computed in place on one new tensor; backward recomputes the sigmoid.

    Autograd of ``x * sigmoid(1.702 x)`` would keep the sigmoid as well as ``x`` for
    every MLP (4x the token width); here only ``x`` is kept, and the forward makes
    one temporary instead of three.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x * 1.702).sigmoid_().mul_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        s = (x * 1.702).sigmoid_()
        # d/dx [x s(1.702 x)] = s + 1.702 x s (1 - s)
        return grad * s * (1.702 * x * (1 - s) + 1)


@fx_leaf
def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)`` through :class:`_QuickGELUFunction`.

    A leaf of FX graphs: traced through, the autograd Function's in-place forward
    would become plain ops without its backward.
    """
    return _QuickGELUFunction.apply(x)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the activation every official CvT model is built with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_gelu(x)


class CvTBlock(nn.Module):
    """Pre-norm block: convolutional attention then MLP (QuickGELU), each with a residual.

    Args:
        dims (int): Token width.
        num_heads (int): Number of heads.
        mlp_ratio (float): MLP hidden width / token width.
        qkv_bias (bool): Bias in the q/k/v linears.
        drop_path (float): Stochastic depth rate.
    """

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attn = ConvAttention(dims, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = Mlp(dims, int(dims * mlp_ratio), act_layer=QuickGELU)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], num_cls: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw, num_cls))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------
class CvTStage(nn.Module):
    """Convolutional token embedding, an optional class token, then blocks.

    Args:
        in_channels (int): Input width.
        dims (int): Token width.
        depth (int): Number of blocks (0 for the embedding alone).
        num_heads (int): Number of heads.
        patch (Tuple[int, int, int]): Embedding kernel, stride, padding.
        drop_paths (Sequence[float]): Stochastic depth per block.
        mlp_ratio (float): MLP hidden width / token width.
        qkv_bias (bool): Bias in the q/k/v linears.
        cls_token (bool): Whether the stage carries a class token (official: the last).
    """

    def __init__(self, in_channels: int, dims: int, depth: int, num_heads: int, patch: Tuple[int, int, int],
                 drop_paths: Sequence[float] = (), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 cls_token: bool = False):
        super().__init__()
        self.patch_embed = ConvEmbed(in_channels, dims, *patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims)) if cls_token else None
        self.blocks = nn.ModuleList(
            CvTBlock(dims, num_heads, mlp_ratio, qkv_bias, drop_paths[j]) for j in range(depth))


def stage_drop_paths(rate: Union[float, Sequence[float]], depths: Sequence[int]) -> List[List[float]]:
    """Stochastic depth per block: one linear ramp from 0 inside each stage (the official rule).

    A float is the last stage's final rate, the earlier stages having none, as in
    every released CvT (13/21: 0.1, W24: 0.3); a sequence gives each stage's own.
    """
    if isinstance(rate, (int, float)):
        rate = [0.0] * (len(depths) - 1) + [float(rate)]
    rate = list(rate)
    if len(rate) != len(depths):
        raise ValueError(f'drop_path_rate needs one rate per stage ({len(depths)}) or a float, got {rate}.')
    return [[r * j / (d - 1) if d > 1 else 0.0 for j in range(d)] for r, d in zip(rate, depths)]


def checkpoint_arch(state: dict) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Widths and depths of the stages with blocks in a converted state dict."""
    dims, depths = [], []
    while f'stage{len(dims)}.blocks.0.norm1.weight' in state:
        prefix = f'stage{len(dims)}.blocks.'
        depths.append(len({k[len(prefix):].split('.')[0] for k in state if k.startswith(prefix)}))
        dims.append(state[prefix + '0.norm1.weight'].shape[0])
    return tuple(dims), tuple(depths)


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------
@MODELS.register_module()
class CvT(HybridBackbone):
    """CvT backbone returning NCHW maps at strides 4, 8, 16 (and 32 with ``extra_stage``).

    The stage maps are the official ones: the tokens after each stage's last block,
    without the class token. The class token of the last stage takes part in that
    stage's attention (it is a query and a key of every block) but is not an output.

    **Stride-32 level.** CvT ends at stride 16. ``extra_stage=True`` adds a fourth
    level made the CvT way: a convolutional token embedding (3x3 conv, stride 2,
    padding 1, then LayerNorm, exactly like the entrance of stages 1 and 2) on the
    last stage's map, to ``extra_dims`` channels, with no blocks after it. It is new
    (ImageNet files have no weights for it: it keeps its initial values, with a log
    line), and named ``stage{n}.patch_embed.*`` after the n official stages. The
    dense configs switch it on, so FPN, RetinaNet, Mask R-CNN and UperNet's
    pyramid pooling get the stride-32 map they are designed for.

    **norm_eval.** Every attention block has three BatchNorms (after the depthwise
    q/k/v convolutions). Detection trains with 1-2 large images per GPU, whose
    batch statistics differ from the ImageNet ones the model was trained with
    (256 images of 224x224 per GPU); the default (``norm_eval=None``) keeps the
    ImageNet running statistics (the BN scale and shift still learn), so training
    and testing use the same normalisation and results do not depend on the batch
    size per GPU, once such statistics have been loaded; random statistics (no
    weights loaded) keep training. Set it to False with large per-GPU batches or
    SyncBN.

    Args:
        arch (str | dict): '13', '21', 'w24' (also 'cvt-13', ...; an int is read as
            its name), or a dict with ``embed_dims``, ``depths``, ``num_heads`` (one
            per stage), optionally ``mlp_ratio`` (default 4) and ``cls_token``
            (a class token in the last stage, default True).
        drop_path_rate (float | Sequence[float], optional): Stochastic depth, a linear
            ramp from 0 inside each stage to the stage's rate. A float r means
            (0, ..., 0, r), the official pattern. Default: the official ImageNet
            rate of the arch (13 and 21: 0.1, w24: 0.3; custom dicts: 0.1 unless they
            give ``drop_path_rate``).
        extra_stage (bool): Add the stride-32 level described above. Default: False
            (the official network).
        extra_dims (int, optional): Width of the stride-32 level. Default: twice the
            last stage's width (768 for 13 and 21).
        with_tokens (bool): Also return the last official stage's final tokens, as
            one more item ``(patch_tokens, cls_token)``: the patch tokens as a
            ``(B, C, ceil(H / 16), ceil(W / 16))`` map and the class token ``(B, C)``
            (None for an arch without class token), both without a norm; what the
            official classifier reads. Every official stage then runs. Default: False.
        frozen_stages (int): -1 none, 0 the stride-4 embedding (``stage0.patch_embed``),
            k that and stages 0..k-1 (with their class token). Default: -1.
        norm_eval (bool, optional): Keep the attention BatchNorms in eval mode
            (fixed statistics) while training. Default: None, i.e. frozen from the
            moment weights are loaded (``init_cfg``, ``load_from``,
            ``load_state_dict``; see above); random statistics train.
        **kwargs: The arguments of every family (``in_channels``, ``out_indices``, ``init_cfg``, ...): see
            :class:`~mmhybrid.models.base.HybridBackbone`.
    """

    family = 'CvT'
    key = 'cvt'
    converter = staticmethod(convert_cvt)
    arch_zoo = {
        '13': dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6), drop_path_rate=0.1),
        '21': dict(embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6), drop_path_rate=0.1),
        'w24': dict(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16), drop_path_rate=0.3),
    }
    arch_aliases = {'cvt-13': '13', 'cvt-21': '21', 'cvt-w24': 'w24'}
    arch_required = ('embed_dims', 'depths', 'num_heads')
    #: how the family appears in timm (see CrossFormer.timm)
    timm = dict(
        variants={'cvt_13': '13', 'cvt_21': '21', 'cvt_w24': 'w24'},
        first_conv=('stage0.patch_embed.proj', ),
        # official cls_cvt.py: norm (LayerNorm, eps 1e-5) on the last stage's class token
        # -> head; HuggingFace's CvtForImageClassification calls them layernorm/classifier
        classifier=('cvt', dict(norm_eps=1e-5), {'norm': 'norm', 'head': 'fc', 'layernorm': 'norm',
                                                 'classifier': 'fc'}),
        params={'cvt_13': 20.0, 'cvt_21': 31.6, 'cvt_w24': 277.2},
        # the official test transform: resize to 224 / 0.875, centre crop, ImageNet mean/std
        # (bicubic, as HuggingFace's CvT image processors)
        cfg=dict(crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pool_size=(14, 14),
                 paper_ids='arXiv:2103.15808', origin_url='https://github.com/microsoft/CvT'))
    #: the size the GPU check and the benchmarks time (see CrossFormer.benchmark)
    benchmark = dict(name='CvT-13', cfg=dict(arch='13', norm_eval=True), official='official/cvt_13')
    #: a small arch for fast CPU checks (tests, ``preflight.py --tiny``)
    test_arch = dict(embed_dims=(16, 32, 48), depths=(1, 2, 2), num_heads=(1, 2, 3))
    #: token embedding (kernel, stride, padding) of the first stage and of the later ones
    first_patch, later_patch = (7, 4, 2), (3, 2, 1)

    def __init__(self,
                 arch: Union[str, int, dict] = '13',
                 drop_path_rate: Union[None, float, Sequence[float]] = None,
                 extra_stage: bool = False,
                 extra_dims: Optional[int] = None,
                 with_tokens: bool = False,
                 norm_eval: Optional[bool] = None,
                 **kwargs):
        self.drop_path_rate = drop_path_rate
        self.extra_stage, self.extra_dims = extra_stage, extra_dims
        self.with_tokens = with_tokens
        super().__init__(arch=arch, norm_eval=norm_eval, **kwargs)

    def build(self, spec: dict) -> Tuple[List[int], List[int]]:
        """The stages ``stage0 .. stage{n-1}`` (and, with ``extra_stage``, the stride-32 level ``stage{n}``);
        their widths and strides."""
        dims, depths, heads = (tuple(spec[k]) for k in ('embed_dims', 'depths', 'num_heads'))
        if not len(dims) == len(depths) == len(heads):
            raise ValueError(f'embed_dims {dims}, depths {depths} and num_heads {heads} differ in length.')
        self.num_official_stages, self.depths = len(dims), depths
        mlp_ratio = spec.get('mlp_ratio', 4.0)
        with_cls = spec.get('cls_token', True)

        widths, strides = [], []
        channels, stride = self.in_channels, 1
        drop_path_rate = spec.get('drop_path_rate', 0.1) if self.drop_path_rate is None else self.drop_path_rate
        for i, rates in enumerate(stage_drop_paths(drop_path_rate, depths)):
            patch = self.first_patch if i == 0 else self.later_patch
            stage = CvTStage(channels, dims[i], depths[i], heads[i], patch, rates, mlp_ratio,
                             cls_token=with_cls and i == len(dims) - 1)
            self.add_module(f'stage{i}', stage)
            channels, stride = dims[i], stride * patch[1]
            widths.append(channels)
            strides.append(stride)
        if self.extra_stage:
            extra_dims = self.extra_dims or 2 * dims[-1]
            self.add_module(f'stage{len(dims)}', CvTStage(channels, extra_dims, 0, 1, self.later_patch))
            widths.append(extra_dims)
            strides.append(stride * self.later_patch[1])
        return widths, strides

    def stem_modules(self) -> List[nn.Module]:
        return [self.stage0.patch_embed]

    def stage_modules(self) -> List[nn.Module]:
        return [getattr(self, f'stage{i}') for i in range(self.num_official_stages + int(self.extra_stage))]

    def _default_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.Conv2d)):
                m.reset_parameters()   # convolutions: PyTorch's default, as the official code
            elif isinstance(m, CvTStage) and m.cls_token is not None:
                trunc_normal_(m.cls_token, std=0.02)

    def adapt_pretrained(self, state: dict, source: str) -> dict:
        """Refuse another variant by naming it; with ``extra_stage``, complete the stride-32 level.

        ImageNet files have only the official stages: the stride-32 level then keeps
        its initial values; a dense checkpoint trained with the level loads it.
        """
        dims, depths = checkpoint_arch(state)
        mine = (tuple(self.stage_channels[:self.num_official_stages]), self.depths)
        if dims and (dims, depths) != mine:
            named = [f"arch='{name}'" for name, spec in self.arch_zoo.items()
                     if (spec['embed_dims'], spec['depths']) == (dims, depths)]
            raise CheckpointMismatchError(
                f'{source} holds a CvT with embed_dims {dims} and depths {depths}, but this backbone '
                f'({self.arch_name}) has embed_dims {mine[0]} and depths {mine[1]}. Build it with '
                f"{named[0] if named else 'a matching arch dict'} to load this file.")
        if not self.extra_stage:
            return state
        return self.keep_new_weights(state, f'stage{self.num_official_stages}.', 'the stride-32 level', source)

    def forward(self, x: torch.Tensor) -> Tuple:
        """``(B, C, H, W)`` -> maps of ``ceil(H / s) x ceil(W / s)`` for the levels in ``out_indices``
        (and, with ``with_tokens``, ``(patch_tokens, cls_token)`` last)."""
        self.check_input(x)
        # channels_last: every convolution then returns (B, H, W, C) memory, which is
        # the token layout, so no map is copied between convolutions and tokens
        x = pad_bottom_right(x, 4, 4).contiguous(memory_format=torch.channels_last)
        last = max(self.out_indices)
        if self.with_tokens:
            last = max(last, self.num_official_stages - 1)
        outs, cls = [], None
        for i, stage in enumerate(self.stage_modules()[:last + 1]):
            tokens = stage.patch_embed(x)  # (B, H, W, C)
            b, h, w, c = tokens.shape
            tokens = tokens.reshape(b, h * w, c)
            num_cls = 0
            if stage.cls_token is not None:
                tokens = torch.cat([stage.cls_token.expand(b, -1, -1), tokens], dim=1)
                num_cls = 1
            for block in stage.blocks:
                tokens = self.run_block(block, tokens, (h, w), num_cls)
            x = tokens[:, num_cls:].unflatten(1, (h, w)).permute(0, 3, 1, 2)  # NCHW view
            tokens_out = self.with_tokens and i == self.num_official_stages - 1
            out = x.contiguous() if i in self.out_indices or tokens_out else None
            if i in self.out_indices:
                outs.append(out)
            if tokens_out:
                patches, cls = out, (tokens[:, 0] if num_cls else None)  # one copy serves both
        if self.with_tokens:
            outs.append((patches, cls))
        return self.finish_outputs(outs)
