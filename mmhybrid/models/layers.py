"""Small building blocks shared by the backbone families."""
from typing import Optional, Sequence, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_

__all__ = ['DropPath', 'LayerNorm2d', 'Mlp', 'attention', 'autocast_output', 'autocast_outputs', 'biased_attention', 'bn_affine',
           'conv_act', 'conv_bn', 'depthwise_conv', 'drop_path_rates', 'has_hooks', 'onednn_conv',
           'onednn_conv_binary', 'onednn_inference', 'pad_bottom_right', 'trunc_normal_init']


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


def trunc_normal_init(layer: nn.Module, std: float = 0.02) -> None:
    """The transformer initialisation of one Linear or convolution: truncated-normal
    weight (``std``, cut at +-2), zero bias."""
    trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def drop_path_rates(rate: float, depths: Sequence[int]) -> list:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over all blocks, per stage."""
    total = sum(depths)
    flat = [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(flat[start:start + d])
        start += d
    return out


def autocast_outputs(outs):
    """Cast a backbone's returned maps to the autocast dtype where autocast is on.

    Under autocast the dtype of a map depends on the last op that made it (a
    convolution gives the autocast dtype, a residual sum with an fp32 parameter or
    a concatenation with an fp32 class token gives fp32), so maps of one forward
    could differ. Every family returns its maps through this function: under
    autocast each floating map (fp64 excepted, which autocast leaves alone too) is
    in the autocast dtype of its device; without autocast nothing changes.

    Args:
        outs: a tuple of maps; an item may itself be a tuple (e.g. ``(patch_tokens,
            cls_token)``), and None is kept.
    """
    def cast(t):
        if isinstance(t, (tuple, list)):
            return type(t)(cast(u) for u in t)
        return t if t is None else autocast_output(t)

    return tuple(cast(t) for t in outs)


def autocast_output(t: torch.Tensor) -> torch.Tensor:
    """One returned map in the autocast dtype of its device where autocast is on (fp64 and
    non-float tensors as they are); a leaf of FX graphs, so a traced model casts when it runs."""
    if (not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == torch.float64
            or not torch.is_autocast_enabled(t.device.type)):
        return t
    return t.to(torch.get_autocast_dtype(t.device.type))


torch.fx.wrap('autocast_output')


def pad_bottom_right(x: torch.Tensor, multiple_h: int, multiple_w: int,
                     channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the bottom/right of a map so its sides are multiples of the given numbers.

    Shape-dependent Python: the families that call it make it a leaf of FX graphs
    (``torch.fx.wrap('pad_bottom_right')`` in their module), so a traced model pads
    whatever size it is given.

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


# --------------------------------------------------------------------------------------
# oneDNN convolutions with fused epilogues (CPU inference)
# --------------------------------------------------------------------------------------
# oneDNN applies an activation, or adds/multiplies another tensor, while it writes a
# convolution's output (the kernel torch.compile's CPU backend emits): one pass over
# memory instead of two or three. It is a private torch op, so the families use it
# only where it computes exactly the plain path (no autograd, fp32 on CPU, no
# autocast; see ``onednn_inference``), and the plain path runs everywhere else,
# training included.
ONEDNN_CONV = (getattr(torch.ops.mkldnn, '_convolution_pointwise', None)
               if torch.backends.mkldnn.is_available() else None)
# activation -> (eager function, oneDNN algorithm); 'gelu' is the exact (erf) GELU
_ACTIVATIONS = {'none': (None, None), 'gelu': (F.gelu, 'none'), 'swish': (F.silu, None),
                'tanh': (torch.tanh, None)}


def _being_traced(x: torch.Tensor) -> bool:
    """Whether ``x`` runs under a tracer or compiler (jit.trace/script, torch.export, torch.compile, FX)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return True
    if isinstance(x, torch.fx.Proxy):
        return True
    # torch.export(strict=False) and make_fx run the model on fake/functional tensors
    return type(x) is not torch.Tensor and not isinstance(x, nn.Parameter)


def has_hooks(*modules: nn.Module) -> bool:
    """Whether any of ``modules`` (or the global module registry) has forward hooks.

    Fused paths that compute several modules in one call step aside then, so that
    every hook runs.
    """
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def bn_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of a BatchNorm with fixed statistics: ``bn(x) == x * scale + shift`` per channel.

    Computed anew on every call (nothing is written into the module), so gradients
    still reach ``bn.weight`` and ``bn.bias``.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


# --------------------------------------------------------------------------------------
# Depthwise convolutions in CPU training
# --------------------------------------------------------------------------------------
# oneDNN's depthwise backward on CPU (measured: torch 2.13, avx512_bf16, one thread, the
# depthwise convs of CloFormer-S, CvT-13, Conv2Former-T, CrossFormer++-S at 224x224):
# * in bf16 only the 3x3 stride-1 kernel is fast; 3x3 stride 2 and every larger kernel
#   are 2-10x slower than in fp32 (5x5 on [1, 256, 56, 56]: 45.7 ms bf16, 10.2 ms fp32);
# * channels_last collapses when the weight is large (C*k*k >= ~40k: 5x5 on
#   [1, 1792, 7, 7]: 21 ms channels_last, 1.7 ms NCHW; 11x11 on [1, 576, 7, 7]: 32 ms
#   vs 2 ms), and is as fast or faster than NCHW below that.
# Forward-only calls (inference) are fast in every case and are left alone, as is CUDA.
_DEPTHWISE_NCHW_WEIGHT = 40000


def _depthwise_plan(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> Tuple[bool, bool]:
    """``(compute in fp32, feed NCHW)`` for a depthwise convolution of ``x`` recorded by autograd on CPU."""
    if (x.device.type != 'cpu' or not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad)
            or x.dtype not in (torch.float32, torch.bfloat16, torch.float16)):
        return False, False
    autocast = torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') != torch.float32
    to_fp32 = autocast and (tuple(conv.kernel_size) != (3, 3) or tuple(conv.stride) != (1, 1))
    fp32 = to_fp32 or (not autocast and x.dtype == torch.float32)
    to_nchw = (fp32 and conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] >= _DEPTHWISE_NCHW_WEIGHT
               and not x.is_contiguous())
    return to_fp32, to_nchw


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x)`` for a depthwise convolution (``groups == channels``), fast in CPU training.

    Where autograd records it on CPU, the input goes in NCHW-contiguous when the
    channels_last kernel is slow, and under bf16/fp16 autocast the convolution runs
    in fp32 (result cast back to the autocast dtype) where its low-precision
    backward is slow (see ``_depthwise_plan``). Otherwise (inference, CUDA,
    tracing, other convolutions) it is ``conv(x)``, or ``F.conv2d`` with the given
    weights. A leaf of FX graphs (each family module that calls it wraps it too),
    so a traced model decides per call; the fp32 result equals ``conv(x)`` up to
    the summation order of the other layout.

    Args:
        conv: the convolution (stride, padding, dilation, groups; weights unless replaced).
        x: its input.
        weight: replaces ``conv.weight`` (e.g. with a BatchNorm folded in).
        bias: replaces ``conv.bias`` (only together with ``weight``).
    """
    w = conv.weight if weight is None else weight
    to_fp32 = to_nchw = False
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1 and not _being_traced(x):
        to_fp32, to_nchw = _depthwise_plan(conv, x, w)
    if to_nchw:
        x = x.contiguous()
    if not to_fp32:
        if weight is None:
            return conv(x)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    dtype = torch.get_autocast_dtype('cpu')
    with torch.autocast('cpu', enabled=False):
        x = x.float()
        if weight is None:
            y = conv(x)
        else:
            y = F.conv2d(x, weight.float(), None if bias is None else bias.float(), conv.stride, conv.padding,
                         conv.dilation, conv.groups)
    return y.to(dtype)


torch.fx.wrap('depthwise_conv')


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))``; with ``bn`` in eval mode, one convolution with the BatchNorm folded in.

    A depthwise ``conv`` runs through ``depthwise_conv`` (fast CPU training).
    Folding keeps the convolution output out of the autograd graph (a BatchNorm
    keeps its input for the backward pass, a convolution with folded weights does
    not) and saves a pass over memory. The modules run as they are in training
    mode and when they have hooks.

    Args:
        x: the input.
        conv: the convolution.
        bn: the BatchNorm after it.
    """
    if bn.training or has_hooks(conv, bn):
        return bn(depthwise_conv(conv, x))
    scale, shift = bn_affine(bn)
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return depthwise_conv(conv, x, conv.weight * scale.view(-1, 1, 1, 1), bias)


def onednn_inference(x: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether the fused oneDNN convolutions may replace the plain path for input ``x``.

    Only for eager CPU fp32 inference: not with autograd or autocast, not while the
    model is traced, scripted, exported or compiled (the private op is unknown to
    those tools; the plain path is what they should record), and not when the
    replaced modules (or global module hooks) have hooks, so that hooks always run.

    Args:
        x: the input of the fused computation.
        *modules: modules whose forward the fused call replaces.
    """
    if (ONEDNN_CONV is None or torch.is_grad_enabled() or x.device.type != 'cpu' or x.dtype != torch.float32
            or torch.is_autocast_enabled('cpu') or _being_traced(x)):
        return False
    if has_hooks(*modules):
        return False
    return not any(getattr(m, 'weight', None) is not None and m.weight.dtype != torch.float32 for m in modules)


def onednn_conv(x: torch.Tensor, conv: nn.Conv2d, act: str = 'none', weight: Optional[torch.Tensor] = None,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(conv(x))`` as one oneDNN convolution (call only where ``onednn_inference`` holds).

    Args:
        x: the input.
        conv: the convolution (weights, stride, padding, dilation, groups).
        act: 'none', 'gelu' (exact), 'swish' or 'tanh'.
        weight: replaces ``conv.weight`` (e.g. with a scale folded in).
        bias: replaces ``conv.bias``.
    """
    return ONEDNN_CONV(x, conv.weight if weight is None else weight, conv.bias if bias is None else bias,
                       list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, act, [],
                       _ACTIVATIONS[act][1])


def onednn_conv_binary(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d, op: str,
                       weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x) <op> other`` ('add' or 'mul') as one oneDNN convolution.

    Args:
        x: the convolution's input.
        other: the tensor added to (or multiplied with) its output, same shape.
        conv: the convolution.
        op: 'add' or 'mul'.
        weight: replaces ``conv.weight``.
        bias: replaces ``conv.bias``.
    """
    return ONEDNN_CONV.binary(x, other, conv.weight if weight is None else weight,
                              conv.bias if bias is None else bias, list(conv.padding), list(conv.stride),
                              list(conv.dilation), conv.groups, op, None, None, [], None)


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str, scale: Optional[float] = None) -> torch.Tensor:
    """``act(conv(x))``, or ``act(conv(x) * scale)`` with the scale folded into the weights.

    One fused oneDNN convolution where ``onednn_inference`` allows it, else the
    plain convolution and activation.

    Args:
        conv: the convolution.
        x: its input.
        act: 'gelu' (exact), 'swish' or 'tanh'.
        scale: optional factor on the convolution output, before the activation.
    """
    weight, bias = conv.weight, conv.bias
    if scale is not None:
        weight, bias = weight * scale, None if bias is None else bias * scale
    if onednn_inference(x, conv):
        return onednn_conv(x, conv, act, weight, bias)
    eager = _ACTIVATIONS[act][0]
    if scale is None:
        return eager(conv(x))
    return eager(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))


# --------------------------------------------------------------------------------------
# Attention with a learned additive bias (CPU training)
# --------------------------------------------------------------------------------------
# On CPU, scaled_dot_product_attention with a float attn_mask that needs a gradient runs
# the math kernel: the (G, heads, N, M) scores and probabilities are materialised for all
# groups at once and kept for the backward (in fp32 plus bf16 copies under autocast).
# Here the forward runs without autograd and the backward recomputes the probabilities,
# both a chunk of groups at a time, so that only one chunk's score matrix exists.
# The forward is plain matmul + softmax + matmul per chunk rather than the fused CPU
# flash kernel (aten._scaled_dot_product_flash_attention_for_cpu): measured with torch
# 2.13 on 2 threads (AVX-512), for CrossFormer's 49-token groups (d = 32) the chunked
# forward takes 0.6-0.7x the flash kernel's time in fp32 and bf16 (for 196-token groups
# about 1x in fp32, 0.65x in bf16); with chunks that fit in cache the softmax
# normaliser is recomputed in the backward by one fused softmax, so nothing but the
# inputs is saved. For large groups (CrossFormer's LDA groups at detection sizes: 950
# tokens at 800x1216) the fused kernel is faster in fp32 (64 groups x 3 heads: 152 against
# 239 ms) and level in bf16, but taking it there gave no faster bf16 training step of
# CrossFormer-S at 800x1216 side by side (bench.py: 5.05 s against 4.23 s, within the
# noise of this machine), so the chunked forward is used for every size. Inference keeps
# the fused kernel: taking the chunked forward there for groups up to 256 tokens made
# CrossFormer-S's forward at 512x512 slower side by side (fp32 387 against 342 ms, bf16
# 204 against 178 ms, official 368 / 163 ms in the same run).
# Bytes of one chunk's fp32 score matrix (the forward and backward hold 2-3 of that size).
# CrossFormer-S training steps at 512x512, 2 threads, chunks of 2/4/8/16 MiB interleaved in one
# process (median of 3, two runs): bf16 605-654 / 608 / 547-590 / 625 ms, fp32 within noise.
BIASED_ATTENTION_CHUNK_BYTES = 8 << 20


def _bias_4d(bias: torch.Tensor) -> torch.Tensor:
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


class _BiasedAttention(torch.autograd.Function):
    """``softmax(q @ k^T * scale + bias) @ v`` computed and differentiated a chunk of groups at a time.

    fp32 and fp64 inputs are computed in their own dtype. bf16/fp16 inputs (autocast's) are
    computed as autocast runs the plain ops (the official implementations' path): matmuls in
    the low dtype, the bias added and the softmax taken in fp32, its probabilities cast back
    for the matmul with v; the backward mirrors that (softmax backward and the bias gradient
    in fp32). Saves q, k, v and the bias only. Not twice differentiable.
    """

    @staticmethod
    def _chunks(q, k):
        g, h, n, _ = q.shape
        step = max(1, BIASED_ATTENTION_CHUNK_BYTES // (h * n * k.shape[-2] * 4))
        return [(s, min(g, s + step)) for s in range(0, g, step)]

    @staticmethod
    def _probs(qs, kc, bias):
        """fp32 (fp64) probabilities of a chunk from scaled queries and keys in their dtype."""
        scores = torch.matmul(qs, kc.transpose(-1, -2))
        return torch.softmax(scores.to(bias.dtype).add_(bias), dim=-1)

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, bias)
        ct = torch.promote_types(q.dtype, torch.float32)
        bias4 = _bias_4d(bias).to(ct)
        out = torch.empty(q.shape, dtype=v.dtype, device=q.device)
        with torch.autocast(q.device.type, enabled=False):
            for s, e in _BiasedAttention._chunks(q, k):
                b = bias4 if bias4.shape[0] == 1 else bias4[s:e]
                p = _BiasedAttention._probs(q[s:e] * scale, k[s:e], b)
                out[s:e] = torch.matmul(p.to(v.dtype), v[s:e])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias = ctx.saved_tensors
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        scale = ctx.scale
        ct = torch.promote_types(q.dtype, torch.float32)
        bias4 = _bias_4d(bias)
        bias_ct = bias4.to(ct)
        grad_out = grad_out.to(v.dtype)
        dq = torch.empty_like(q) if need_q else None
        dk = torch.empty_like(k) if need_k else None
        dv = torch.empty_like(v) if need_v else None
        # fp32 (fp64 for fp64 inputs) accumulator of the bias gradient, summed over groups
        dbias = torch.zeros(bias4.shape, dtype=ct, device=bias.device) if need_bias else None
        with torch.autocast(q.device.type, enabled=False):
            for s, e in _BiasedAttention._chunks(q, k):
                qs, kc, go = q[s:e] * scale, k[s:e], grad_out[s:e]
                b = bias_ct if bias_ct.shape[0] == 1 else bias_ct[s:e]
                p = _BiasedAttention._probs(qs, kc, b)
                if need_v:
                    dv[s:e] = torch.matmul(p.to(v.dtype).transpose(-1, -2), go)
                if not (need_q or need_k or need_bias):
                    continue
                dp = torch.matmul(go, v[s:e].transpose(-1, -2)).to(ct)
                # dS = P * (dP - rowsum(P * dP)): the softmax backward, one fused kernel
                ds = torch.ops.aten._softmax_backward_data(dp, p, -1, ct)
                del p, dp
                if need_bias:
                    if bias4.shape[0] == 1:
                        dbias += ds.sum_to_size(dbias.shape)
                    else:
                        dbias[s:e] += ds.sum_to_size((e - s,) + tuple(dbias.shape[1:]))
                ds = ds.to(q.dtype)
                if need_q:
                    dq[s:e] = torch.matmul(ds, kc).mul_(scale)
                if need_k:
                    dk[s:e] = torch.matmul(ds.transpose(-1, -2), qs)
        if need_bias:
            dbias = dbias.reshape(bias.shape).to(bias.dtype)
        return dq, dk, dv, dbias, None


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v``, the attention of ``F.scaled_dot_product_attention``
    with ``bias`` as a float ``attn_mask``, fast and lean where the bias is learned on CPU.

    Which computation runs:

    * CPU, grad mode on, some input requiring grad, not traced/exported/compiled: a
      custom ``autograd.Function`` whose forward (without autograd) and backward run
      chunk by chunk over the groups ``G``, the backward recomputing the probabilities
      from q, k, v and the bias, so the ``(G, heads, N, M)`` score matrix never exists
      at once (a chunk's holds about ``BIASED_ATTENTION_CHUNK_BYTES``) and only the
      inputs are saved. Outputs and the gradients of q, k, v and bias equal the math
      path's; the bias gradient (summed over the groups and any broadcast dims) is
      accumulated in fp32 (fp64 for fp64 inputs), and every gradient is returned in its
      input's dtype. Under bf16/fp16 autocast the inputs are cast to the autocast dtype
      first, as ``F.scaled_dot_product_attention`` does, and the chunks run as autocast
      runs the plain ops: low-precision matmuls, fp32 bias add and softmax (the official
      implementations' arithmetic). Not twice differentiable (a double backward
      through it raises).
    * everywhere else, ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``
      unchanged: inference, tracing and export, and CUDA, whose memory-efficient
      kernel already trains an ``attn_mask`` without materialising the scores.

    Args:
        q: ``(G, heads, N, d)`` queries.
        k: ``(G, heads, M, d)`` keys.
        v: ``(G, heads, M, d)`` values.
        bias: ``(N, M)``, ``(heads, N, M)`` or ``(1 or G, heads, N, M)`` additive bias
            (broadcast over the groups; a heads dim of 1 broadcasts over heads too).
        scale: score scale; default ``d ** -0.5``.

    Returns:
        ``(G, heads, N, d)`` outputs.
    """
    if (q.device.type != 'cpu' or not torch.is_grad_enabled() or q.dim() != 4 or not 2 <= bias.dim() <= 4
            or not any(t.requires_grad for t in (q, k, v, bias)) or _being_traced(q) or _being_traced(bias)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if torch.is_autocast_enabled('cpu'):
        low = torch.get_autocast_dtype('cpu')
        q, k, v = (t.to(low) if t.dtype == torch.float32 else t for t in (q, k, v))
    return _BiasedAttention.apply(q, k, v, bias, float(scale))


# CPU training under bf16/fp16 autocast: attention calls of at most this many scores (batch x
# heads x queries x keys) run as matmul + softmax + matmul, as autocast runs the plain ops,
# instead of SDPA's CPU flash kernel, whose low-precision backward is the slower one there
# (Conformer-S/16 at 512x512, 6 heads x 1025 tokens: about 25 ms a call for flash's forward and
# backward, about 15 ms for the plain ops in the official code; torch profiler). The plain ops
# keep the probabilities for the backward (6 bytes a score: at most about 600 MB a call); larger
# calls (detection sizes) keep the flash kernel, which holds no score matrix. Side by side
# (bench.py, 512x512, batch 1, 2 threads), bf16 training against the official code: Conformer-S/16
# 0.88x -> 1.04x, CvT-13 0.90x -> 1.14x (its stage-0 call has 67M scores).
MATH_ATTENTION_MAX_SCORES = 96 << 20


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, scale=scale)``, or the same attention as plain
    matmul + softmax + matmul in CPU training under low-precision autocast for calls of at most
    ``MATH_ATTENTION_MAX_SCORES`` scores (faster there; see above).

    Args:
        q: ``(..., N, d)`` queries.
        k: ``(..., M, d)`` keys.
        v: ``(..., M, dv)`` values.
        scale: score scale; default ``d ** -0.5``.

    Returns:
        ``(..., N, dv)`` outputs.
    """
    if (q.device.type == 'cpu' and torch.is_autocast_enabled('cpu') and torch.is_grad_enabled()
            and any(t.requires_grad for t in (q, k, v)) and not _being_traced(q)
            and q.shape[:-1].numel() * k.shape[-2] <= MATH_ATTENTION_MAX_SCORES):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        return torch.matmul(scores.softmax(-1), v)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


torch.fx.wrap('attention')
