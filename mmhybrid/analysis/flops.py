"""FLOPs and parameters: counting with ``torch.utils.flop_counter.FlopCounterMode``.

Counts convolutions, matmuls and ``scaled_dot_product_attention``, extended here with
the CPU attention kernel (``aten._scaled_dot_product_flash_attention_for_cpu``), which
torch's own table leaves out (attention would count as zero on CPU), and with the oneDNN
convolutions with fused epilogues (``mkldnn._convolution_pointwise``) of inference fast
paths; the backward of grouped (depthwise) convolutions is counted per group, where
torch's formula overcounts it. mmengine's counter misses attention on every device.

Units: one multiply-add is 2 FLOPs = 1 MAC. Papers that report "FLOPs" for vision
backbones (Swin, CrossFormer, ...) report MACs. Element-wise operations, normalisation
and softmax are not counted (as in fvcore).
"""
import sys
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils import flop_counter as _fc

from .build import resolve_shape

__all__ = ['analyze_model', 'extra_flop_mapping', 'count_flops', 'count_params',
           'forward_candidates', 'make_flop_counter']

_ATTENTION_OP_NAMES = (
    '_scaled_dot_product_flash_attention',
    '_scaled_dot_product_efficient_attention',
    '_scaled_dot_product_cudnn_attention',
    '_scaled_dot_product_flash_attention_for_cpu',
    '_scaled_dot_product_fused_attention_overrideable',
    '_flash_attention_forward',
    '_efficient_attention_forward',
)


def _sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    # 2 * B*H*L*S*E (q @ k^T) + 2 * B*H*L*S*Ev (p @ v)
    return _fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                         out_shape=None, **kwargs):
    return _fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _mkldnn_conv_flops(*args, out_shape=None, **kwargs):
    # oneDNN convolution with a fused epilogue (inference fast paths): the convolution's
    # FLOPs. One packet, two signatures: (x, w, b, padding, ..., algorithm) has 10
    # arguments, .binary (x, other, w, b, padding, ...) has 13.
    x_shape, w_shape = (args[0], args[1]) if len(args) <= 10 else (args[0], args[2])
    return _fc.conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def _mkldnn_conv_inplace_flops(other_shape, x_shape, w_shape, *args, out_shape=None, **kwargs):
    # _convolution_pointwise_.binary(other, x, w, ...) writes conv(x) <op> other into other
    return _fc.conv_flop_count(x_shape, w_shape, other_shape, transposed=False)


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                         _dilation, transposed, _output_padding, _groups, output_mask,
                         out_shape=None, **kwargs):
    # grad_input and grad_weight each cost what the forward convolution costs. torch's
    # formula (up to 2.13 at least) counts grad_weight of a grouped convolution `groups`
    # times too often (a depthwise conv's backward came out ~C times its forward).
    forward = _fc.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def extra_flop_mapping() -> Dict[Any, Callable]:
    """Flop formulas for the kernels that torch's table lacks or miscounts.

    Shape-based (``FlopCounterMode`` wraps them with ``shape_wrapper``). Attention and
    oneDNN kernels are returned only where ``torch.utils.flop_counter.flop_registry``
    does not already cover them, so a later torch that adds them keeps its own formula;
    ``aten.convolution_backward`` is always replaced by a groups-aware formula (equal to
    torch's for ungrouped convolutions).

    Returns:
        dict: op (or overload packet) -> formula, for ``FlopCounterMode(custom_mapping=)``.
    """
    aten = torch.ops.aten
    mapping = {aten.convolution_backward: _conv_backward_flops}
    pairs = [
        ('_scaled_dot_product_flash_attention_for_cpu', _sdpa_forward_flops),
        ('_scaled_dot_product_flash_attention_for_cpu_backward', _sdpa_backward_flops),
        ('_scaled_dot_product_fused_attention_overrideable', _sdpa_forward_flops),
        ('_scaled_dot_product_fused_attention_overrideable_backward', _sdpa_backward_flops),
    ]
    for name, fn in pairs:
        if hasattr(aten, name):
            op = getattr(aten, name)
            if op not in _fc.flop_registry:
                mapping[op] = fn
    # oneDNN convolutions with fused epilogues, used by inference fast paths
    # (FlopCounterMode looks formulas up by overload packet)
    mkldnn = torch.ops.mkldnn
    for name, fn in [('_convolution_pointwise', _mkldnn_conv_flops),
                     ('_convolution_pointwise_', _mkldnn_conv_inplace_flops)]:
        if hasattr(mkldnn, name) and getattr(mkldnn, name) not in _fc.flop_registry:
            mapping[getattr(mkldnn, name)] = fn
    return mapping


def make_flop_counter() -> _fc.FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts CPU attention and fused oneDNN convs,
    and counts the backward of grouped convolutions right (:func:`extra_flop_mapping`)."""
    return _fc.FlopCounterMode(display=False, custom_mapping=extra_flop_mapping())


def _is_attention_op(op) -> bool:
    name = str(op).split('.', 1)[-1]
    return any(name.startswith(n) for n in _ATTENTION_OP_NAMES) or 'attention' in name


def _tracker_prefix(counter: _fc.FlopCounterMode, root: nn.Module) -> Optional[str]:
    # Name the root so that every submodule is tracked under "<Class>.<fqn>", even when
    # fn() calls submodules directly (e.g. model.extract_feat) instead of root.forward.
    tracker = getattr(counter, 'mod_tracker', None)
    if tracker is None or not hasattr(tracker, '_get_mod_name'):
        return None
    try:
        return tracker._get_mod_name(root)
    except Exception:  # private API; the per-module table is optional
        return None


def _per_module(counts: Dict[str, Dict[Any, int]], root: nn.Module, prefix: str,
                total: int) -> Dict[str, int]:
    per_module = {}
    named = list(root.named_modules())
    for name, _ in named:
        key = prefix if name == '' else f'{prefix}.{name}'
        per_module[name] = int(sum(counts.get(key, {}).values()))
    # Containers that are never called themselves (ModuleList, ModuleDict, or modules
    # whose children are called directly) get the sum of their children, bottom-up.
    for name, mod in reversed(named):
        if per_module[name] == 0:
            per_module[name] = sum(
                per_module[f'{name}.{c}' if name else c] for c, _ in mod.named_children())
    per_module[''] = total
    return per_module


def count_flops(fn: Callable[[], Any], root: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Run ``fn()`` once under a flop counter.

    Args:
        fn: callable that runs the computation to count (forward, or forward+backward).
        root: the model; when given, ``per_module`` is keyed by its ``named_modules()``
            names ('' is the model itself).

    Returns:
        dict with ``total`` (FLOPs, multiply-add = 2), ``attention`` (the part spent in
        scaled_dot_product_attention kernels), ``per_op`` (op name -> FLOPs),
        ``per_module`` (module name -> FLOPs; None without ``root``) and ``output``
        (what ``fn()`` returned).
    """
    counter = make_flop_counter()
    prefix = _tracker_prefix(counter, root) if root is not None else None
    with counter:
        output = fn()
    counts = counter.get_flop_counts()
    global_counts = counts.get('Global', {})
    total = int(sum(global_counts.values()))
    per_op: Dict[str, int] = defaultdict(int)
    attention = 0
    for op, v in global_counts.items():
        per_op[str(op).split('.', 1)[-1]] += int(v)
        if _is_attention_op(op):
            attention += int(v)
    per_module = _per_module(counts, root, prefix, total) if prefix is not None else None
    return dict(total=total, attention=int(attention), per_op=dict(per_op), output=output,
                per_module=per_module)


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module`` (shared parameters once).

    Args:
        module: the model.
    """
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------
# a whole model on one random input
# ---------------------------------------------------------------------------------------

def _pad_divisor(model: nn.Module) -> int:
    dp = getattr(model, 'data_preprocessor', None)
    div = getattr(dp, 'pad_size_divisor', None) or getattr(dp, 'size_divisor', None)
    return int(div) if div else 1


def _isinstance_of(obj, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    base = getattr(mod, name, None) if mod is not None else None
    return base is not None and isinstance(obj, base)


def _data_sample_class(model: nn.Module):
    mod = type(model).__module__
    try:
        if mod.startswith('mmseg') or _isinstance_of(model, 'mmseg.models', 'BaseSegmentor'):
            from mmseg.structures import SegDataSample
            return SegDataSample
        if mod.startswith('mmdet') or _isinstance_of(model, 'mmdet.models', 'BaseDetector'):
            from mmdet.structures import DetDataSample
            return DetDataSample
    except ImportError:
        return None
    return None


def _make_data_samples(model: nn.Module, batch: int, hw: Tuple[int, int]):
    """Minimal data samples (image metas only) for mmdet detectors / mmseg segmentors."""
    cls = _data_sample_class(model)
    if cls is None:
        return None
    meta = dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw,
                scale_factor=(1.0, 1.0), flip=False, flip_direction=None)
    samples = []
    for _ in range(batch):
        s = cls()
        s.set_metainfo(meta)
        samples.append(s)
    return samples


def forward_candidates(model: nn.Module, inputs: torch.Tensor,
                       is_backbone: bool) -> List[Tuple[str, Callable[[], Any]]]:
    """The ways to run the model on a bare tensor, most complete first.

    Args:
        model: a backbone, or a detector / segmentor built from a config.
        inputs: the ``(N, C, H, W)`` input.
        is_backbone: True for a backbone: ``model(inputs)`` is the only way.

    Returns:
        list of ``(label, fn)``; for a detector / segmentor ``_forward`` with image-meta
        data samples, ``_forward`` without, ``extract_feat``, then ``model(inputs)``.
    """
    if is_backbone:
        return [('model(inputs)', lambda: model(inputs))]
    cands = []
    if hasattr(model, '_forward'):
        samples = _make_data_samples(model, inputs.shape[0], tuple(inputs.shape[-2:]))
        if samples is not None:
            cands.append(('model._forward(inputs, data_samples) [extract_feat + head]',
                          lambda: model._forward(inputs, samples)))
        cands.append(('model._forward(inputs) [extract_feat + head]',
                      lambda: model._forward(inputs)))
    if hasattr(model, 'extract_feat'):
        cands.append(('model.extract_feat(inputs) [backbone + neck only]',
                      lambda: model.extract_feat(inputs)))
    cands.append(('model(inputs)', lambda: model(inputs)))
    return cands


def analyze_model(model: nn.Module, shape: Sequence[int], batch: int = 1,
                  in_channels: int = 3, device: str = 'cpu', is_backbone: bool = True,
                  pad_to_divisor: bool = True) -> Dict[str, Any]:
    """FLOPs and params of ``model`` on one random input (eval mode, no grad).

    For a detector / segmentor (``is_backbone=False``) the counted computation is
    ``model._forward`` (extract_feat + head, as mmdet/mmseg's own tools count it); when
    that cannot run on a bare tensor, the next of :func:`forward_candidates` is counted
    and the reasons are kept in ``fallback_errors``. A backbone's errors propagate.

    Args:
        model: the backbone or full model.
        shape: ``[s]`` or ``[h, w]``.
        batch: batch size.
        in_channels: input channels.
        device: where to run.
        is_backbone: whether ``model`` is a bare backbone (else a config's model).
        pad_to_divisor: config models: round the shape up to the data preprocessor's
            ``pad_size_divisor``, as the data pipeline would.

    Returns:
        the :func:`count_flops` dict (without ``output``) plus ``counted``,
        ``fallback_errors``, ``input_shape``, ``params``, ``backbone_params``,
        ``backbone_flops``, ``model_type``, ``device`` and ``module_params``.
    """
    h, w = resolve_shape(shape)
    if not is_backbone and pad_to_divisor:
        div = _pad_divisor(model)
        h, w = -(-h // div) * div, -(-w // div) * div
    model = model.to(device).eval()
    inputs = torch.randn(batch, in_channels, h, w, device=device)
    errors = []
    result = None
    with torch.no_grad():
        for label, fn in forward_candidates(model, inputs, is_backbone):
            try:
                result = count_flops(fn, root=model)
                result['counted'] = label
                break
            except Exception as err:  # try the next, less complete, way
                if is_backbone:
                    raise
                errors.append(f'{label}: {type(err).__name__}: {err}')
    if result is None:
        raise RuntimeError('could not run the model on a random input:\n  ' + '\n  '.join(errors))
    result.pop('output', None)
    result['fallback_errors'] = errors
    result['input_shape'] = [batch, in_channels, h, w]
    result['params'] = count_params(model)
    backbone = model if is_backbone else getattr(model, 'backbone', None)
    result['backbone_params'] = count_params(backbone) if backbone is not None else None
    if not is_backbone and backbone is not None and result.get('per_module'):
        result['backbone_flops'] = result['per_module'].get('backbone')
    else:
        result['backbone_flops'] = result['total'] if is_backbone else None
    result['model_type'] = type(model).__name__
    result['device'] = str(device)
    result['module_params'] = {name: count_params(m) for name, m in model.named_modules()}
    return result
