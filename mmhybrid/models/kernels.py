"""CPU kernels of the backbone families: the paths that make CPU inference and training fast.

Each function computes what the plain PyTorch ops compute (up to float rounding) and
takes its own path only where that is faster; elsewhere (CUDA, tracing and export,
modules with hooks) it runs the plain ops:

* oneDNN convolutions with fused epilogues for CPU fp32 inference
  (:func:`onednn_inference`, :func:`onednn_conv`, :func:`onednn_conv_binary`,
  :func:`conv_act`);
* depthwise convolutions in the layout and precision whose CPU backward is fast
  (:func:`depthwise_conv`), and convolution + BatchNorm with the norm folded
  (:func:`conv_bn`);
* attention with a learned additive bias, chunked forward and backward in CPU
  training (:func:`biased_attention`), and attention as plain ops in CPU training
  under low-precision autocast (:func:`attention`);
* in CPU inference, both attentions take the faster of SDPA's fused kernel and the
  plain ops, timed once per shape (:data:`CPU_INFERENCE_AUTOTUNE`).
"""
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .layers import being_traced, bn_affine, fx_leaf, has_hooks

__all__ = ['CPU_INFERENCE_AUTOTUNE', 'attention', 'biased_attention', 'conv_act', 'conv_bn', 'depthwise_conv', 'onednn_conv',
           'onednn_conv_binary', 'onednn_inference']


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


# --------------------------------------------------------------------------------------
# Depthwise convolutions in CPU training
# --------------------------------------------------------------------------------------
# oneDNN's depthwise backward on CPU has two slow cases, which depthwise_conv steers around:
# * in bf16 only the 3x3 stride-1 kernel is fast; 3x3 stride 2 and every larger kernel
#   are several times slower than in fp32, so those run in fp32;
# * channels_last is slow when the weight is large (C*k*k of about 40k and more), and as
#   fast as NCHW or faster below that, so large weights get an NCHW input.
# Forward-only calls (inference) are fast in every case and are left alone, as is CUDA.
# (The timings: docs/benchmarks.md, "Why the kernels are shaped this way".)

#: weight size (channels x kernel area) from which a depthwise convolution in CPU training is fed NCHW
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


@fx_leaf
def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x)`` for a depthwise convolution (``groups == channels``), fast in CPU training.

    Where autograd records it on CPU, the input goes in NCHW-contiguous when the
    channels_last kernel is slow, and under bf16/fp16 autocast the convolution runs
    in fp32 (result cast back to the autocast dtype) where its low-precision
    backward is slow (see ``_depthwise_plan``). Otherwise (inference, CUDA,
    tracing, other convolutions) it is ``conv(x)``, or ``F.conv2d`` with the given
    weights. A leaf of FX graphs (:func:`~mmhybrid.models.layers.fx_leaf`), so a
    traced model decides per call; the fp32 result equals ``conv(x)`` up to the
    summation order of the other layout.

    Args:
        conv: the convolution (stride, padding, dilation, groups; weights unless replaced).
        x: its input.
        weight: replaces ``conv.weight`` (e.g. with a BatchNorm folded in).
        bias: replaces ``conv.bias`` (only together with ``weight``).
    """
    w = conv.weight if weight is None else weight
    to_fp32 = to_nchw = False
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1 and not being_traced(x):
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
            or torch.is_autocast_enabled('cpu') or being_traced(x)):
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


@fx_leaf
def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str, scale: Optional[float] = None) -> torch.Tensor:
    """``act(conv(x))``, or ``act(conv(x) * scale)`` with the scale folded into the weights.

    One fused oneDNN convolution where ``onednn_inference`` allows it, else the
    plain convolution and activation. A leaf of FX graphs, so a traced model
    decides at run time, as the eager one (equal outputs).

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
# both a chunk of groups at a time, so that only one chunk's score matrix exists and
# nothing but the inputs is saved (with chunks that fit in cache, the backward recomputes
# the softmax normaliser with one fused softmax).
# The forward is plain matmul + softmax + matmul per chunk, not the fused CPU flash kernel
# (aten._scaled_dot_product_flash_attention_for_cpu): for CrossFormer's small groups it is
# the faster of the two, and for its large LDA groups at detection sizes, where the flash
# kernel is faster in fp32, taking the flash kernel did not make a training step faster;
# so one path serves every size. Inference takes the faster of this forward and the fused
# kernel, timed per shape (see _fastest below). (The timings: docs/benchmarks.md, "Why the
# kernels are shaped this way".)

#: bytes of one chunk's fp32 score matrix (the forward and backward hold 2-3 of that size);
#: the fastest of 2, 4, 8 and 16 MiB for CrossFormer-S's bf16 training steps
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
        return _BiasedAttention.compute(q, k, v, bias, scale)

    @staticmethod
    def compute(q, k, v, bias, scale):
        """The output, a chunk of groups at a time, without autograd."""
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
    * CPU inference (nothing requires grad, or grad mode off), not traced: the faster on
      this machine of that chunked forward and ``F.scaled_dot_product_attention``, timed
      on the first call of each shape (``CPU_INFERENCE_AUTOTUNE``).
    * everywhere else, ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``
      unchanged: tracing and export, and CUDA, whose memory-efficient kernel already
      trains an ``attn_mask`` without materialising the scores.

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
    if q.device.type != 'cpu' or q.dim() != 4 or not 2 <= bias.dim() <= 4 or being_traced(q) or being_traced(bias):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias))
    if not training and not CPU_INFERENCE_AUTOTUNE:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    fused = (q, k, v)
    if torch.is_autocast_enabled('cpu'):
        low = torch.get_autocast_dtype('cpu')
        q, k, v = (t.to(low) if t.dtype == torch.float32 else t for t in (q, k, v))
    if training:
        return _BiasedAttention.apply(q, k, v, bias, scale)
    return _fastest(('biased', q, k, bias),
                    (lambda: F.scaled_dot_product_attention(*fused, attn_mask=bias, scale=scale),
                     lambda: _BiasedAttention.compute(q, k, v, bias, scale)))


# CPU training under bf16/fp16 autocast: attention calls of at most this many scores (batch x
# heads x queries x keys) run as matmul + softmax + matmul, as autocast runs the plain ops,
# instead of SDPA's CPU flash kernel, whose low-precision backward is the slower one there.
# The plain ops keep the probabilities for the backward (6 bytes a score: at most about 600 MB
# a call); larger calls (detection sizes) keep the flash kernel, which holds no score matrix.
# The budget covers CvT-13's stage-0 call at 512x512 (67M scores). (The timings:
# docs/benchmarks.md, "Why the kernels are shaped this way".)
MATH_ATTENTION_MAX_SCORES = 96 << 20


@fx_leaf
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, scale=scale)``, or the same attention as plain
    matmul + softmax + matmul on CPU: in training under low-precision autocast for calls of at
    most ``MATH_ATTENTION_MAX_SCORES`` scores (faster there; see above), and in inference, a block
    of query rows at a time, where that is the faster of the two on this machine, timed on the
    first call of each shape (``CPU_INFERENCE_AUTOTUNE``). A leaf of FX graphs, so a traced model
    picks its path per call.

    Args:
        q: ``(..., N, d)`` queries.
        k: ``(..., M, d)`` keys.
        v: ``(..., M, dv)`` values.
        scale: score scale; default ``d ** -0.5``.

    Returns:
        ``(..., N, dv)`` outputs.
    """
    if q.device.type != 'cpu' or being_traced(q):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    plain_scale = q.shape[-1] ** -0.5 if scale is None else scale
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        if torch.is_autocast_enabled('cpu') and q.shape[:-1].numel() * k.shape[-2] <= MATH_ATTENTION_MAX_SCORES:
            return torch.matmul(torch.matmul(q * plain_scale, k.transpose(-2, -1)).softmax(-1), v)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if not CPU_INFERENCE_AUTOTUNE:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return _fastest(('plain', q, k, v), (lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
                                         lambda: _query_chunked_attention(q, k, v, plain_scale)))


#: bytes of the score matrix of one block of query rows in CPU inference attention without a bias
INFERENCE_CHUNK_BYTES = 8 << 20


def _query_chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(q @ k^T * scale) @ v`` as plain ops, a block of query rows at a time, so that a block's
    scores (about ``INFERENCE_CHUNK_BYTES``) stay in cache and no full score matrix exists (inference)."""
    low = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else q.dtype
    row_bytes = max(1, q.shape[:-2].numel() * k.shape[-2] * torch.finfo(low).bits // 8)   # 1: empty batch
    rows, kt = max(1, INFERENCE_CHUNK_BYTES // row_bytes), k.transpose(-2, -1)
    blocks = [torch.matmul(torch.matmul(qb * scale, kt).softmax(-1), v) for qb in q.split(rows, dim=-2)]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-2)


# --------------------------------------------------------------------------------------
# Attention in CPU inference: the faster path, timed once per shape
# --------------------------------------------------------------------------------------
# Which of SDPA's fused CPU kernel and the plain ops (chunked, for a bias) is faster
# depends on the shape, the dtype, the CPU and even the caller: standalone, the fused
# kernel took 1.5-6x the plain ops' time for most of CrossFormer's and CvT's calls on an
# AVX-512 CPU, while inside the model it won several of the same shapes. So the first
# inference call of a shape on CPU times both, in place (twice each, interleaved), and the
# faster serves that shape, dtype, autocast state and thread count from then on, as
# cudnn.benchmark does on CUDA.
# (The timings: docs/benchmarks.md, "Why the kernels are shaped this way".)

#: time both paths of CPU inference attention once per shape and keep the faster; False: always
#: SDPA's fused kernel (the same path on every machine)
CPU_INFERENCE_AUTOTUNE = True
#: (path kind, dtypes, shapes, autocast dtype, threads) -> index of the faster path
_FASTEST: Dict[tuple, int] = {}


def _fastest(what: tuple, paths: Sequence[Callable[[], torch.Tensor]]) -> torch.Tensor:
    """The output of the path of ``paths`` (callables computing the same attention) that was the
    faster for this call's kind and tensors' shapes and dtypes, timing them on the first such call.
    Under a dispatch mode (a FLOP counter, a profiler of ops) only the first path runs, once.

    Args:
        what: a name for the kind of call, then the tensors whose shapes and dtypes key the choice.
        paths: zero-argument callables computing the same output.
    """
    if _get_current_dispatch_mode() is not None:
        return paths[0]()
    kind, *tensors = what
    autocast = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else None
    key = (kind, autocast, torch.get_num_threads(), *((t.dtype, tuple(t.shape)) for t in tensors))
    choice = _FASTEST.get(key)
    if choice is not None:
        return paths[choice]()
    best, outs = [float('inf')] * len(paths), [None] * len(paths)
    for _ in range(2):
        for i, path in enumerate(paths):
            start = time.perf_counter()
            outs[i] = path()
            best[i] = min(best[i], time.perf_counter() - start)
    _FASTEST[key] = choice = best.index(min(best))
    return outs[choice]
