"""Small building blocks shared by the backbone families.

Generic modules and helpers (norms, MLP, stochastic depth, initialisation, padding,
output casting, hook and tracer checks) and :func:`fx_leaf`, which makes a function a
leaf of FX graphs wherever it is called from. The CPU kernels (fused oneDNN paths,
fast depthwise training, attention) are in :mod:`mmhybrid.models.kernels`.
"""
import functools
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple, TypeVar

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_

__all__ = ['DropPath', 'LayerNorm2d', 'Mlp', 'autocast_output', 'autocast_outputs', 'being_traced', 'bn_affine',
           'drop_path_rates', 'fx_leaf', 'has_hooks', 'pad_bottom_right', 'trunc_normal_init']

_F = TypeVar('_F', bound=Callable[..., Any])
#: what may be or hold an FX proxy among a leaf's arguments
_MAY_HOLD_PROXY = (torch.fx.Proxy, tuple, list, dict)


def _find_proxy(values: Iterable) -> Optional[torch.fx.Proxy]:
    """The first FX proxy among ``values``, looking into tuples, lists and dicts; None if there is none."""
    for value in values:
        if isinstance(value, torch.fx.Proxy):
            return value
        if isinstance(value, _MAY_HOLD_PROXY):
            found = _find_proxy(value.values() if isinstance(value, dict) else value)
            if found is not None:
                return found
    return None


def fx_leaf(fn: _F) -> _F:
    """Decorator: ``fn`` becomes a leaf of FX graphs, at every call site, in every module.

    ``torch.fx.wrap(name)`` makes calls a leaf only in the module that declares it (it
    patches that module's globals while a tracer runs), so a helper imported elsewhere
    would need a wrap in each importing module. Here the function itself does what
    such a patch does: called with an FX proxy among its arguments (while
    ``torch.fx.symbolic_trace``, torchvision's or timm's feature extraction trace a
    model), it records one ``call_function`` node of itself and returns its proxy;
    called with anything else it runs ``fn``. So shape-dependent Python and per-call
    decisions run when the graph runs, at whatever input size, as in eager mode.

    The node's target is the decorated function, so a traced graph traced again keeps
    the leaf; the node carries the ``is_wrapped`` mark that ``torch.fx.wrap`` gives, so
    the graph's generated code declares the leaf too.

    Args:
        fn: a module-level function.

    Returns:
        The function, as a leaf.
    """
    @functools.wraps(fn)
    def leaf(*args, **kwargs):
        # the common eager call (plain positional arguments) costs one isinstance per argument
        for value in args:
            if isinstance(value, _MAY_HOLD_PROXY):
                break
        else:
            if not kwargs:
                return fn(*args)
        proxy = _find_proxy(args)
        if proxy is None:   # (not ``or``: the truth value of a proxy cannot be traced)
            proxy = _find_proxy(kwargs.values())
        if proxy is None:
            return fn(*args, **kwargs)
        out = proxy.tracer.create_proxy('call_function', leaf, args, kwargs)
        out.node.meta['is_wrapped'] = True
        return out

    return leaf  # type: ignore[return-value]


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


@fx_leaf
def autocast_output(t: torch.Tensor) -> torch.Tensor:
    """One returned map in the autocast dtype of its device where autocast is on (fp64 and
    non-float tensors as they are); a leaf of FX graphs, so a traced model casts when it runs."""
    if (not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == torch.float64
            or not torch.is_autocast_enabled(t.device.type)):
        return t
    return t.to(torch.get_autocast_dtype(t.device.type))


@fx_leaf
def pad_bottom_right(x: torch.Tensor, multiple_h: int, multiple_w: int,
                     channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the bottom/right of a map so its sides are multiples of the given numbers.

    Shape-dependent Python, so a leaf of FX graphs (:func:`fx_leaf`): a traced model
    pads whatever size it is given.

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


def being_traced(x: torch.Tensor) -> bool:
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
