"""Command-line arguments shared by ``tools/analysis/get_flops.py`` and ``benchmark.py``."""
import argparse
from typing import List

from .build import parse_cfg_literal

__all__ = ['add_model_args', 'backbone_cfgs_from_args', 'check_model_args']


def add_model_args(parser: argparse.ArgumentParser, config_positional: bool,
                   multiple: bool = False) -> None:
    """Arguments that select the model: a config file, or a backbone.

    Args:
        parser: the parser to add them to.
        config_positional: the config is a positional argument (get_flops: its full
            model) rather than ``--config`` (benchmark: its ``model.backbone``).
        multiple: ``--backbone``, ``--arch`` and ``--backbone-cfg`` may be repeated (one
            run per backbone; the i-th ``--arch`` goes with the i-th ``--backbone``).
    """
    from mmengine.config import DictAction
    if config_positional:
        parser.add_argument('config', nargs='?', help='config file (full model)')
    else:
        parser.add_argument('--config', help='config file; its model.backbone is used')
    more = dict(action='append') if multiple else {}
    again = ' (repeat for several)' if multiple else ''
    parser.add_argument('--backbone', **more, help='registered backbone type, e.g. CrossFormer, '
                        'mmhybrid.CrossFormer, mmdet.ResNet' + again)
    parser.add_argument('--arch', **more, help='arch of --backbone (passed as arch=...)'
                        + ('; one per --backbone, in order' if multiple else ''))
    parser.add_argument('--backbone-cfg', **more, help='backbone config dict: JSON, Python '
                        'literal or "dict(type=..., ...)"' + again)
    parser.add_argument('--backbone-args', nargs='+', action=DictAction, default={},
                        help='extra keyword arguments of the backbone, key=value')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, key=value (with a config)')
    parser.add_argument('--import-module', action='append', default=[],
                        help='extra module to import first (registers more types)')


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def check_model_args(parser: argparse.ArgumentParser, args, config_name: str,
                     multiple: bool = False) -> None:
    """Exit with a usage error unless one kind of source is given: a config, or
    ``--backbone`` / ``--backbone-cfg`` (one of them unless ``multiple``; several
    ``--arch`` pair with as many ``--backbone``).

    Args:
        parser: the parser (for ``parser.error``).
        args: its parsed arguments.
        config_name: how the config argument is called in messages.
        multiple: as given to :func:`add_model_args`.
    """
    backbones, cfgs = _as_list(args.backbone), _as_list(args.backbone_cfg)
    if not multiple and backbones and cfgs:
        parser.error('give either --backbone or --backbone-cfg, not both')
    if args.config and (backbones or cfgs):
        parser.error(f'give either {config_name} or --backbone/--backbone-cfg, not both')
    if not args.config and not (backbones or cfgs):
        parser.error(f'give {config_name}, --backbone or --backbone-cfg')
    archs, sources = _as_list(args.arch), len(backbones) + len(cfgs)
    if len(archs) > 1 and sources == 1:
        parser.error('one backbone takes one --arch')
    if sources > 1 and archs and len(archs) != len(backbones):
        parser.error('with several backbones, give one --arch per --backbone, in the same '
                     'order (a --backbone-cfg carries its own arch)')


def backbone_cfgs_from_args(args) -> List[dict]:
    """The backbone configs of ``--backbone-cfg`` and ``--backbone``/``--arch``, each with
    ``--backbone-args`` applied.

    With one backbone, ``--arch`` applies to it (``--backbone-cfg`` too); with several,
    the i-th ``--arch`` goes with the i-th ``--backbone``.

    Args:
        args: arguments parsed with :func:`add_model_args` (and checked).
    """
    cfgs = [parse_cfg_literal(text) for text in _as_list(args.backbone_cfg)]
    named = [dict(type=t) for t in _as_list(args.backbone)]
    archs = _as_list(args.arch)
    for cfg, arch in zip(named if len(cfgs) + len(named) > 1 else cfgs + named, archs):
        cfg['arch'] = arch
    out = cfgs + named
    for cfg in out:
        cfg.update(args.backbone_args or {})
    return out
