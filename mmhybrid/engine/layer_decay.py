"""Layer-wise (or stage-wise) learning-rate decay for mmhybrid backbones.

ConvNeXt's dense recipes, which Conv2Former follows, scale the learning rate of
each backbone parameter by ``decay_rate ** (num_layers + 1 - layer_id)``: the
stem learns slowest, the heads at the full rate. mmdet's and mmseg's
``LearningRateDecayOptimizerConstructor`` only accept classes named ConvNeXt;
this constructor asks the backbone itself for each parameter's layer id
(``backbone.layer_decay_id(name, num_layers, decay_type)``), so every family can
define its own rule once, next to its modules.

Use it from an mmdet or mmseg config::

    optim_wrapper = dict(
        constructor='mmhybrid.LayerDecayOptimizerConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))
"""
import json
from typing import Dict, List

import torch.nn as nn
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS

DECAY_TYPES = ('layer_wise', 'stage_wise')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with a learning rate that decays towards the input.

    Every parameter outside the backbone gets layer id ``num_layers + 1`` (scale
    1); a backbone parameter gets the id its backbone's ``layer_decay_id`` gives,
    between 0 (stem) and ``num_layers``. One-dimensional parameters (norms,
    biases, layer scales) get no weight decay, as in ConvNeXt's constructor;
    frozen parameters are left out.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config, as for
            ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict): ``decay_rate`` (float, required), ``num_layers``
            (int, required: the number of backbone layer ids above the stem),
            ``decay_type`` ('layer_wise' or 'stage_wise', default 'layer_wise').
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        super().__init__(optim_wrapper_cfg, dict(paramwise_cfg or {}))
        paramwise_cfg = dict(paramwise_cfg or {})
        missing = [k for k in ('decay_rate', 'num_layers') if k not in paramwise_cfg]
        if missing:
            raise ValueError(f'LayerDecayOptimizerConstructor needs paramwise_cfg keys {missing}, e.g. '
                             "paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6).")
        self.decay_rate = float(paramwise_cfg.pop('decay_rate'))
        self.num_layers = int(paramwise_cfg.pop('num_layers'))
        self.decay_type = paramwise_cfg.pop('decay_type', 'layer_wise')
        if self.decay_type not in DECAY_TYPES:
            raise ValueError(f'decay_type must be one of {DECAY_TYPES}, got {self.decay_type!r}.')
        if paramwise_cfg:
            raise ValueError(f'LayerDecayOptimizerConstructor does not combine with {sorted(paramwise_cfg)}; '
                             'its weight decay rule is fixed (none on 1-D parameters).')

    def lr_scale(self, layer_id: int) -> float:
        """Learning-rate multiplier of a layer id (``num_layers + 1`` -> 1)."""
        return self.decay_rate ** (self.num_layers + 1 - layer_id)

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """Append one parameter group per (layer id, decay or not) to ``params``.

        Args:
            params: the list of parameter groups, extended in place.
            module: the model; its ``backbone`` attribute must provide
                ``layer_decay_id``.
        """
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'layer_decay_id'):
            raise TypeError(f'LayerDecayOptimizerConstructor needs a model with an mmhybrid backbone that '
                            f'defines layer_decay_id; got {type(backbone).__name__} in '
                            f'{type(module).__name__}.')
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith('backbone.'):
                layer_id = backbone.layer_decay_id(name[len('backbone.'):], self.num_layers, self.decay_type)
            else:
                layer_id = self.num_layers + 1
            decay = param.ndim > 1
            key = f'layer_{layer_id}_{"decay" if decay else "no_decay"}'
            if key not in groups:
                scale = self.lr_scale(layer_id)
                groups[key] = dict(params=[], param_names=[], lr=self.base_lr * scale, lr_scale=scale,
                                   weight_decay=self.base_wd if decay else 0.0, group_name=key)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        if get_dist_info()[0] == 0:
            summary = {k: dict(lr_scale=g['lr_scale'], weight_decay=g['weight_decay'],
                               num_params=len(g['params'])) for k, g in groups.items()}
            print_log(f'{self.decay_type} lr decay {self.decay_rate}, {self.num_layers} layers: '
                      f'{json.dumps(summary)}', logger='current')
        params.extend(groups.values())


def generic_layer_id(backbone, name: str, num_layers: int, decay_type: str = 'layer_wise') -> int:
    """The generic layer id of a backbone parameter, read from its ``stem_modules()`` and ``stage_modules()``:

    * 'stage_wise': stage i -> ``min(i + 1, num_layers)``;
    * 'layer_wise': the units of all stages in forward order (the items of each stage's block lists and
      its other sub-modules, e.g. a downsampling layer) spread evenly over ``1..num_layers``; a parameter
      held by a stage itself (a class token) goes with the stage's first unit.

    The stem is 0; parameters outside the stem and stages (new layers such as output norms) get
    ``num_layers + 1``, the heads' rate.

    Args:
        backbone: an mmhybrid backbone.
        name: parameter name inside the backbone (no ``backbone.`` prefix).
        num_layers: number of layer ids above the stem.
        decay_type: 'layer_wise' or 'stage_wise'.
    """
    if decay_type not in ('layer_wise', 'stage_wise'):
        raise ValueError(f"decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}.")
    ids = _layer_ids(backbone, num_layers, decay_type)
    if name not in ids:
        raise ValueError(f'No layer id for {type(backbone).__name__} parameter {name!r}.')
    return ids[name]


def _layer_ids(backbone, num_layers: int, decay_type: str) -> Dict[str, int]:
    """Every backbone parameter's id under :func:`generic_layer_id`'s rule."""
    names = {p: n for n, p in backbone.named_parameters(remove_duplicate=False)}
    ids = {n: num_layers + 1 for n in names.values()}   # not in stem or stages: new layers

    def assign(module: nn.Module, layer_id: int, recurse: bool = True) -> None:
        for p in module.parameters(recurse=recurse):
            if names[p] not in assigned:
                ids[names[p]] = layer_id
                assigned.add(names[p])

    assigned = set()
    for m in backbone.stem_modules():
        assign(m, 0)
    stages = backbone.stage_modules()
    units = []   # (stage index, module, whether only its own parameters count)
    for s, stage in enumerate(stages):
        units.append((s, stage, False))   # a stage's own parameters (class token), with its first unit
        for child in stage.children():
            expand = isinstance(child, (nn.ModuleList, nn.Sequential))
            units.extend((s, unit, True) for unit in (child if expand else [child]))
    blocks = [u for u in units if u[2]]
    for s, module, is_unit in units:
        if decay_type == 'stage_wise':
            layer_id = min(s + 1, num_layers)
        else:
            first = module if is_unit else next((u[1] for u in blocks if u[0] == s), None)
            k = next((j for j, u in enumerate(blocks) if u[1] is first), 0)
            layer_id = 1 + k * (num_layers - 1) // max(1, len(blocks) - 1) if num_layers > 1 else 1
        assign(module, layer_id, recurse=is_unit)
    return ids
