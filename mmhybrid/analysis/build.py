"""Building what the analysis tools measure: a registered backbone, or a config's model.

Two explicit sources, never guessed from errors:

- a backbone config dict (``dict(type='CrossFormer', arch='small')``), built in the
  ``mmhybrid`` scope (scoped names such as ``mmdet.ResNet`` work too) or, when it comes
  from a config file, in that config's scope (:func:`build_backbone`);
- a config file: its full ``model`` (:func:`build_model_from_config`) or its
  ``model.backbone`` (:func:`backbone_cfg_from_config`).

Whether a backbone takes an argument (e.g. ``drop_path_rate``) is read from the
signature of its registered class (:func:`accepts_argument`).
"""
import ast
import contextlib
import copy
import importlib
import inspect
import json
from typing import Any, Optional, Sequence, Tuple

import torch.nn as nn

__all__ = ['accepts_argument', 'backbone_cfg_from_config', 'build_backbone',
           'build_model_from_config', 'config_scope', 'describe_backbone', 'import_project',
           'load_config', 'parse_cfg_literal', 'prepare_backbone_cfg', 'printable_cfg',
           'resolve_shape', 'resolve_type', 'zero_stochastic_layers']


def import_project(extra_modules: Sequence[str] = ()) -> None:
    """Import mmhybrid (registers its backbones) and any extra modules.

    Args:
        extra_modules: module names to import too (they may register more types).
    """
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
    """Parse a backbone config given on the command line; nothing is executed.

    Args:
        text: JSON (``{"type": "CrossFormer", "arch": "small"}``), a Python literal
            (``{'type': 'CrossFormer'}``) or ``dict(type='CrossFormer', arch='small')``.

    Returns:
        the dict; ValueError when it is not a dict with a ``type`` key.
    """
    try:
        value = json.loads(text)
    except ValueError:
        value = _eval_node(ast.parse(text.strip(), mode='eval').body)
    if not isinstance(value, dict) or 'type' not in value:
        raise ValueError(f'a backbone config must be a dict with a "type" key, got {text!r}')
    return value


def resolve_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """``[s]`` -> (s, s); ``[h, w]`` -> (h, w).

    Args:
        shape: one or two ints.
    """
    shape = list(shape)
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise ValueError(f'--shape takes one or two ints (H W), got {shape}')


# ---------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------

def _registry(default_scope: Optional[str]):
    """The registry a backbone config is built from, and the scope context to build in.

    Without ``default_scope``: ``mmhybrid.registry.MODELS`` in the mmhybrid scope. With one
    (a config's ``default_scope``): mmengine's root MODELS after ``init_default_scope``,
    as that config's own tools would build it.
    """
    import_project()
    if default_scope is None:
        from mmengine.registry import DefaultScope

        from mmhybrid.registry import MODELS
        return MODELS, DefaultScope.overwrite_default_scope('mmhybrid')
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(default_scope)
    return ROOT_MODELS, contextlib.nullcontext()


def resolve_type(cfg: dict, default_scope: Optional[str] = None):
    """The class (or builder function) that :func:`build_backbone` would call for ``cfg``.

    Args:
        cfg: backbone config with a ``type`` (a registered name or a class).
        default_scope: as for :func:`build_backbone`.

    Returns:
        the registered object, or None when the name is not registered.
    """
    obj_type = cfg['type']
    if not isinstance(obj_type, str):
        return obj_type
    registry, scope = _registry(default_scope)
    with scope, registry.switch_scope_and_registry(cfg.get('_scope_')) as reg:
        return reg.get(obj_type)


def accepts_argument(cfg: dict, name: str, default_scope: Optional[str] = None) -> bool:
    """Whether the type of ``cfg`` takes a keyword ``name`` by name in its signature.

    ``**kwargs`` does not count (where those go is unknown), nor does an unknown type.

    Args:
        cfg: backbone config with a ``type``.
        name: the argument, e.g. ``'drop_path_rate'``.
        default_scope: as for :func:`build_backbone`.
    """
    obj = resolve_type(cfg, default_scope)
    if obj is None:
        return False
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(name)
    return param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)


def build_backbone(cfg: dict, default_scope: Optional[str] = None) -> nn.Module:
    """Build a backbone from a config dict.

    Args:
        cfg: backbone config with a ``type``.
        default_scope: None: the type is looked up in ``mmhybrid.registry.MODELS`` (its
            own names, then mmengine's; scoped names such as ``mmdet.ResNet`` work too).
            A scope (e.g. a config's ``default_scope``): built as that config would.
    """
    registry, scope = _registry(default_scope)
    with scope:
        return registry.build(dict(cfg))


def zero_stochastic_layers(model: nn.Module) -> int:
    """Set drop-path and dropout probabilities to 0 (any module with a float
    ``drop_prob``, ``nn.Dropout*``).

    Args:
        model: the model, changed in place.

    Returns:
        how many modules were changed.
    """
    changed = 0
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            if m.p:
                m.p = 0.0
                changed += 1
        elif hasattr(m, 'drop_prob') and isinstance(getattr(m, 'drop_prob'), float):
            if m.drop_prob:
                m.drop_prob = 0.0
                changed += 1
    return changed


def prepare_backbone_cfg(cfg: dict, with_cp: bool = False) -> dict:
    """Benchmark settings on a backbone config: drop path 0 (where the config sets it),
    optional activation checkpointing, no pretrained weights.

    Args:
        cfg: backbone config (not changed).
        with_cp: set ``with_cp=True``.
    """
    cfg = dict(cfg)
    if 'drop_path_rate' in cfg:
        cfg['drop_path_rate'] = 0.0
    if with_cp:
        cfg['with_cp'] = True
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


# ---------------------------------------------------------------------------------------
# config files
# ---------------------------------------------------------------------------------------

def load_config(path: str, cfg_options: Optional[dict] = None):
    """Read a config file (``_base_`` chains, ``mmdet::`` bases, custom_imports).

    Args:
        path: the config file.
        cfg_options: overrides, ``{'a.b': value}``.
    """
    import_project()
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def config_scope(cfg) -> str:
    """The registry scope a config's model is built in.

    ``default_scope``, else the scope prefix of ``model.type``, else the first of mmdet /
    mmseg that registers ``model.type`` (model-only bases such as
    ``mmseg::_base_/models/upernet_r50.py`` set no default_scope), else mmdet.

    Args:
        cfg: an mmengine Config.
    """
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
    """Build ``cfg.model`` in the config's scope (weights are not initialised or loaded).

    Args:
        cfg: an mmengine Config.
    """
    import_project()
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(config_scope(cfg))
    # a ConfigDict, not a plain dict: mmdet reads train_cfg.rpn etc. as attributes
    return ROOT_MODELS.build(copy.deepcopy(cfg.model))


def backbone_cfg_from_config(cfg) -> dict:
    """``cfg.model.backbone`` as a plain dict.

    Args:
        cfg: an mmengine Config.
    """
    bb = cfg.model.get('backbone', None)
    if bb is None:
        raise KeyError('the config has no model.backbone')
    return bb.to_dict() if hasattr(bb, 'to_dict') else dict(bb)


def describe_backbone(cfg: dict) -> str:
    """A short name for a backbone config: ``CrossFormer-small``, ``mmdet.ResNet-depth=18``.

    Args:
        cfg: backbone config with a ``type``.
    """
    obj_type = cfg['type'] if isinstance(cfg['type'], str) else \
        getattr(cfg['type'], '__name__', str(cfg['type']))
    arch = cfg.get('arch')
    if isinstance(arch, (str, int)):
        return f'{obj_type}-{arch}'
    if arch is not None:
        return f'{obj_type} (custom arch)'
    if 'depth' in cfg:
        return f'{obj_type}-{cfg["depth"]}'
    return obj_type


def _json_value(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def printable_cfg(cfg: dict) -> dict:
    """``cfg`` with every value a JSON scalar (others as their ``repr``).

    Args:
        cfg: a config dict.
    """
    return {k: _json_value(v) for k, v in cfg.items()}
