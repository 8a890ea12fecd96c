"""FLOPs and parameters of a backbone or of the full model of a config.

Counting uses ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls and
``scaled_dot_product_attention``), extended here with the CPU attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``), which torch's own table leaves
out: without it, attention is counted as zero on CPU; and with the oneDNN convolutions
with fused epilogues (``mkldnn._convolution_pointwise``) of inference fast paths. mmengine's counter misses
attention on every device.

Units: one multiply-add is 2 FLOPs = 1 MAC. Papers that report "FLOPs" for vision
backbones (Swin, CrossFormer, ...) report MACs; compare their numbers with the MACs line.
Element-wise operations, normalisation and softmax are not counted (as in fvcore).

Examples::

    # a registered backbone (mmhybrid scope, or scoped names such as mmdet.ResNet)
    python tools/analysis/get_flops.py --backbone CrossFormer --arch small --shape 224
    python tools/analysis/get_flops.py --backbone-cfg "dict(type='mmhybrid.CrossFormer', arch='small')"
    # the full model of an mmdet / mmseg config (extract_feat + head), no dataset needed
    python tools/analysis/get_flops.py configs/retinanet_crossformer_s_coco.py --shape 800 1216
    # per-module breakdown two levels deep
    python tools/analysis/get_flops.py --backbone CrossFormer --arch small --depth 2
"""
import argparse
import ast
import copy
import importlib
import json
import sys
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils import flop_counter as _fc

# ---------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------

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


def attention_flop_mapping() -> Dict[Any, Callable]:
    """Flop formulas for the attention kernels that torch's table lacks.

    Shape-based (``FlopCounterMode`` wraps them with ``shape_wrapper``). Only kernels that
    ``torch.utils.flop_counter.flop_registry`` does not already cover are returned, so a
    later torch that adds them keeps its own formula.
    """
    aten = torch.ops.aten
    mapping = {}
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
    """A silent ``FlopCounterMode`` that also counts CPU attention kernels."""
    return _fc.FlopCounterMode(display=False, custom_mapping=attention_flop_mapping())


def _is_attention_op(op) -> bool:
    name = str(op).split('.', 1)[-1]
    return any(name.startswith(n) for n in _ATTENTION_OP_NAMES) or 'attention' in name


def count_flops(fn: Callable[[], Any], root: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Run ``fn()`` once under a flop counter.

    Args:
        fn: callable that runs the computation to count (forward, or forward+backward).
        root: the model, when given, module names in ``per_module`` are its
            ``named_modules()`` names ('' is the model itself).

    Returns:
        dict with ``total`` (FLOPs, multiply-add = 2), ``attention`` (the part spent in
        scaled_dot_product_attention kernels), ``per_op`` (op name -> FLOPs),
        ``per_module`` (module name -> FLOPs; only with ``root``) and ``output``.
    """
    counter = make_flop_counter()
    prefix = None
    if root is not None:
        # Name the root so that every submodule is tracked under "<Class>.<fqn>", even when
        # fn() calls submodules directly (e.g. model.extract_feat) instead of root.forward.
        tracker = getattr(counter, 'mod_tracker', None)
        if tracker is not None and hasattr(tracker, '_get_mod_name'):
            try:
                prefix = tracker._get_mod_name(root)
            except Exception:  # private API; the per-module table is optional
                prefix = None
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
    result = dict(total=total, attention=int(attention), per_op=dict(per_op), output=output,
                  per_module=None)
    if root is not None and prefix is not None:
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
        result['per_module'] = per_module
    return result


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared parameters once)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------
# building models
# ---------------------------------------------------------------------------------------

def import_project(extra_modules: Sequence[str] = ()) -> None:
    """Import mmhybrid (registers its backbones) and any extra modules."""
    importlib.import_module('mmhybrid')
    for name in extra_modules or ():
        importlib.import_module(name)


def _eval_node(node):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        return {kw.arg: _eval_node(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_eval_node(k): _eval_node(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_eval_node(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Name) and node.id in ('true', 'false', 'null'):  # JSON words
        return {'true': True, 'false': False, 'null': None}[node.id]
    return ast.literal_eval(node)


def parse_cfg_literal(text: str) -> dict:
    """Parse a backbone config given on the command line.

    Accepts JSON (``{"type": "CrossFormer", "arch": "small"}``), a Python literal
    (``{'type': 'CrossFormer'}``) or ``dict(type='CrossFormer', arch='small')``; nothing
    is executed.
    """
    try:
        value = json.loads(text)
    except ValueError:
        value = _eval_node(ast.parse(text.strip(), mode='eval').body)
    if not isinstance(value, dict) or 'type' not in value:
        raise ValueError(f'a backbone config must be a dict with a "type" key, got {text!r}')
    return value


def build_backbone(cfg: dict, default_scope: Optional[str] = None) -> nn.Module:
    """Build a backbone from a config dict.

    Without ``default_scope`` the type is looked up in ``mmhybrid.registry.MODELS``
    (its own names, then mmengine's; scoped names such as ``mmdet.ResNet`` work too).
    With one (e.g. the ``default_scope`` of a config) it is built as that config would.
    """
    import_project()
    from mmengine.registry import DefaultScope
    cfg = dict(cfg)
    if default_scope is not None:
        from mmengine.registry import MODELS as ROOT_MODELS
        from mmengine.registry import init_default_scope
        init_default_scope(default_scope)
        return ROOT_MODELS.build(cfg)
    from mmhybrid.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmhybrid'):
        return MODELS.build(cfg)


def load_config(path: str, cfg_options: Optional[dict] = None):
    """Read a config file (``_base_`` chains, ``mmdet::`` bases, custom_imports)."""
    import_project()
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_scope(cfg) -> str:
    """The registry scope a config's model is built in: ``default_scope``, else the scope
    prefix of ``model.type``, else the first of mmdet / mmseg that registers
    ``model.type`` (model-only bases such as ``mmseg::_base_/models/upernet_r50.py`` set
    no default_scope)."""
    scope = cfg.get('default_scope', None)
    if scope:
        return scope
    model_type = cfg.model.get('type', '')
    model_type = model_type if isinstance(model_type, str) else ''
    if '.' in model_type:
        return model_type.split('.', 1)[0]
    for candidate in ('mmdet', 'mmseg'):
        try:
            registry = importlib.import_module(f'{candidate}.registry').MODELS
        except ImportError:
            continue
        if model_type in getattr(registry, 'module_dict', {}) or (
                registry.get(model_type) is not None):
            return candidate
    return 'mmdet'


def build_model_from_config(cfg) -> nn.Module:
    """Build ``cfg.model`` in the config's scope (weights are not initialised or loaded)."""
    import_project()
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(config_scope(cfg))
    # a ConfigDict, not a plain dict: mmdet reads train_cfg.rpn etc. as attributes
    return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def backbone_cfg_from_config(cfg) -> dict:
    """``cfg.model.backbone`` as a plain dict."""
    bb = cfg.model.get('backbone', None)
    if bb is None:
        raise KeyError('the config has no model.backbone')
    return bb.to_dict() if hasattr(bb, 'to_dict') else dict(bb)


def resolve_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """``[s]`` -> (s, s); ``[h, w]`` -> (h, w)."""
    shape = list(shape)
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise ValueError(f'--shape takes one or two ints (H W), got {shape}')


def _pad_divisor(model: nn.Module) -> int:
    dp = getattr(model, 'data_preprocessor', None)
    div = getattr(dp, 'pad_size_divisor', None) or getattr(dp, 'size_divisor', None)
    return int(div) if div else 1


def _make_data_samples(model: nn.Module, batch: int, hw: Tuple[int, int]):
    """Minimal data samples (image metas only) for mmdet detectors / mmseg segmentors."""
    meta = dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw,
                scale_factor=(1.0, 1.0), flip=False, flip_direction=None)
    cls = None
    mod = type(model).__module__
    try:
        if mod.startswith('mmseg') or _isinstance_of(model, 'mmseg.models', 'BaseSegmentor'):
            from mmseg.structures import SegDataSample as cls  # noqa: N813
        elif mod.startswith('mmdet') or _isinstance_of(model, 'mmdet.models', 'BaseDetector'):
            from mmdet.structures import DetDataSample as cls  # noqa: N813
    except ImportError:
        cls = None
    if cls is None:
        return None
    samples = []
    for _ in range(batch):
        s = cls()
        s.set_metainfo(meta)
        samples.append(s)
    return samples


def _isinstance_of(obj, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    base = getattr(mod, name, None) if mod is not None else None
    return base is not None and isinstance(obj, base)


def forward_candidates(model: nn.Module, inputs: torch.Tensor,
                       is_backbone: bool) -> List[Tuple[str, Callable[[], Any]]]:
    """The ways to run the model on a bare tensor, most complete first."""
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
    ``model._forward`` (extract_feat + head, as mmdet/mmseg's own tools count it), with
    fall-backs when that cannot run on a bare tensor.
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


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------

def _g(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x / 1e9:.3f}'


def module_table(result: Dict[str, Any], depth: int) -> str:
    """Per-module FLOPs / params, ``depth`` levels below the model."""
    per_module = result.get('per_module')
    if not per_module:
        return '(per-module breakdown unavailable)'
    total = max(result['total'], 1)
    params = result['module_params']
    rows = []
    for name in params:  # named_modules order: a parent before its children
        level = 0 if name == '' else name.count('.') + 1
        if level > depth:
            continue
        flops = per_module.get(name, 0)
        if name and flops == 0 and params[name] == 0:
            continue
        label = '  ' * level + (name.rsplit('.', 1)[-1] if name else result['model_type'])
        rows.append((label, params[name] / 1e6, flops / 1e9, 100.0 * flops / total))
    width = max(len(r[0]) for r in rows)
    lines = [f'{"module":<{width}}  {"params(M)":>10}  {"GFLOPs":>10}  {"% FLOPs":>8}']
    for label, p, f, pct in rows:
        lines.append(f'{label:<{width}}  {p:>10.3f}  {f:>10.3f}  {pct:>7.1f}%')
    return '\n'.join(lines)


def format_report(result: Dict[str, Any], title: str, depth: Optional[int] = None) -> str:
    total = result['total']
    lines = ['=' * 72, f'Model:        {title}',
             f'Input shape:  {tuple(result["input_shape"])} (N, C, H, W)',
             f'Counted:      {result["counted"]} on {result["device"]}, eval mode',
             f'FLOPs:        {_g(total)} GFLOPs  (multiply-add = 2 FLOPs)',
             f'MACs:         {_g(total / 2)} GMACs   <- what papers call "FLOPs"',
             f'  attention:  {_g(result["attention"])} GFLOPs in scaled_dot_product_attention '
             '(included above)']
    if result.get('backbone_flops') is not None and result['backbone_flops'] != total:
        bf = result['backbone_flops']
        lines.append(f'  backbone:   {_g(bf)} GFLOPs = {_g(bf / 2)} GMACs')
    lines.append(f'Params:       {result["params"] / 1e6:.3f} M total')
    if result.get('backbone_params') is not None:
        lines.append(f'              {result["backbone_params"] / 1e6:.3f} M backbone')
    ops = ', '.join(f'{k}: {v / 1e9:.3f}' for k, v in
                    sorted(result['per_op'].items(), key=lambda kv: -kv[1]))
    lines.append(f'By op (GFLOPs): {ops or "none"}')
    for err in result.get('fallback_errors') or []:
        lines.append(f'note: not counted that way -> {err}')
    lines.append('=' * 72)
    lines.append('Counted: convolutions, matmuls/linear, scaled_dot_product_attention '
                 '(torch FlopCounterMode + CPU attention kernel). Not counted: element-wise '
                 'ops, norms, softmax, pooling, interpolation.')
    if depth is not None:
        lines.append('')
        lines.append(module_table(result, depth))
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------

def add_model_args(parser: argparse.ArgumentParser, config_positional: bool) -> None:
    """Arguments that select a model; shared with benchmark.py."""
    from mmengine.config import DictAction
    if config_positional:
        parser.add_argument('config', nargs='?', help='config file (full model)')
    else:
        parser.add_argument('--config', help='config file; its model.backbone is used')
    parser.add_argument('--backbone', help='registered backbone type, e.g. CrossFormer, '
                        'mmhybrid.CrossFormer, mmdet.ResNet')
    parser.add_argument('--arch', help='arch of --backbone (passed as arch=...)')
    parser.add_argument('--backbone-cfg', help='backbone config dict: JSON, Python literal '
                        'or "dict(type=..., ...)"')
    parser.add_argument('--backbone-args', nargs='+', action=DictAction, default={},
                        help='extra keyword arguments of the backbone, key=value')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, key=value (with a config)')
    parser.add_argument('--import-module', action='append', default=[],
                        help='extra module to import first (registers more types)')


def backbone_cfg_from_args(args) -> dict:
    """The backbone config selected by --backbone/--arch, --backbone-cfg (+ --backbone-args)."""
    if args.backbone_cfg:
        cfg = parse_cfg_literal(args.backbone_cfg)
    elif args.backbone:
        cfg = dict(type=args.backbone)
    else:
        raise SystemExit('give a config, --backbone or --backbone-cfg')
    if args.arch is not None:
        cfg['arch'] = args.arch
    cfg.update(args.backbone_args or {})
    return cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='FLOPs (FlopCounterMode, attention included) and params of a backbone '
        'or of the full model of a config',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_model_args(parser, config_positional=True)
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size: H W, or one int for a square (default 224)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--in-channels', type=int, default=3)
    parser.add_argument('--no-pad', action='store_true',
                        help='config models: do not round the shape up to the '
                        'data_preprocessor pad_size_divisor')
    parser.add_argument('--device', default='cpu', help='cpu (default), cuda, cuda:1, ...')
    parser.add_argument('--depth', type=int, default=None,
                        help='also print a per-module breakdown this many levels deep')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    if args.config and (args.backbone or args.backbone_cfg):
        parser.error('give either a config or --backbone/--backbone-cfg, not both')
    if not args.config and not (args.backbone or args.backbone_cfg):
        parser.error('give a config file, --backbone or --backbone-cfg')
    resolve_shape(args.shape)
    return args


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    import_project(args.import_module)
    if args.config:
        cfg = load_config(args.config, args.cfg_options)
        model = build_model_from_config(cfg)
        title = f'{type(model).__name__} from {args.config}'
        is_backbone = False
    else:
        bcfg = backbone_cfg_from_args(args)
        model = build_backbone(bcfg)
        title = f'{type(model).__name__} (backbone, ' + \
            ', '.join(f'{k}={v!r}' for k, v in bcfg.items()) + ')'
        is_backbone = True
    result = analyze_model(model, args.shape, batch=args.batch, in_channels=args.in_channels,
                           device=args.device, is_backbone=is_backbone,
                           pad_to_divisor=not args.no_pad)
    print(format_report(result, title, args.depth))
    if args.json:
        out = {k: v for k, v in result.items() if k not in ('module_params', 'per_module')}
        out.update(title=title, gflops=result['total'] / 1e9, gmacs=result['total'] / 2e9,
                   params_m=result['params'] / 1e6)
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)
    return result


if __name__ == '__main__':
    main()
