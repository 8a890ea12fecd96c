"""The check's markdown summary (for ``docs/benchmarks.md``), its environment line and its
verdict."""
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..measure import is_cuda
from .backbones import backbone_targets
from .common import Targets


def environment(device: str, tiny: bool) -> Dict[str, Any]:
    """The device and the versions the check ran with (torch, CUDA, mmcv and its ops, timm).

    Args:
        device: the device checked.
        tiny: whether toy sizes ran.
    """
    import mmcv
    from mmcv.ops import get_compiling_cuda_version
    env = dict(device=torch.cuda.get_device_name(device) if is_cuda(device) else 'cpu',
               torch=torch.__version__, cuda=torch.version.cuda, mmcv=mmcv.__version__,
               mmcv_ops_cuda=get_compiling_cuda_version(), threads=torch.get_num_threads(),
               tiny=tiny)
    try:
        import timm
        env['timm'] = timm.__version__
    except ImportError:
        env['timm'] = None
    return env


def fmt(value, spec: str = '.1f', none: str = '-') -> str:
    """``value`` formatted with ``spec``, or ``none`` for None."""
    return none if value is None else format(value, spec)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    """The lines of a markdown table (after a blank line) from a header and rows of cells."""
    lines = ['', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def _with_error(text: str, row: dict) -> str:
    return f'{text} {row["error"]}' if 'error' in row else text


def _ops_table(rows: List[dict]) -> List[str]:
    return md_table(['mmcv op', 'CPU kernel vs reference', 'device vs reference', 'device vs CPU',
                     'bf16 inputs', ''],
                    [[r.get('op', r.get('model')), r.get('cpu') or fmt(r.get('cpu_vs_reference'), '.1e'),
                      fmt(r.get('device_vs_reference'), '.1e'), fmt(r.get('device_vs_cpu'), '.1e'),
                      r.get('bf16', '-'), 'ok' if r.get('ok') else _with_error('FAILED', r)]
                     for r in rows])


def _backbones_table(rows: List[dict], targets: Targets) -> List[str]:
    fused = [_with_error('/'.join(r.get(f'fused_{k}', '-') for k in ('fp32', 'bf16'))
                         if r.get('kind') == 'ours' else '', r) for r in rows]
    lines = md_table(['backbone', 'fwd GFLOPs', 'train fp32 ms', 'train bf16 ms', 'peak fp32 GiB',
                      'peak bf16 GiB', 'fused SDPA (fp32/bf16)'],
                     [[r['model'], fmt(r.get('gflops')),
                       r.get('train_fp32_error') or fmt(r.get('train_fp32_ms')),
                       r.get('train_bf16_error') or fmt(r.get('train_bf16_ms')),
                       fmt(r.get('train_fp32_peak_gib'), '.2f'),
                       fmt(r.get('train_bf16_peak_gib'), '.2f'), f] for r, f in zip(rows, fused)])
    return lines + [''] + [f'- {line}' for line in backbone_targets(rows, targets)]


def _detectors_table(rows: List[dict]) -> List[str]:
    return md_table(['model (optimizer steps)', 'images', 'precision', 's/iter', 'peak GiB',
                     'last loss'],
                    [[r['model'], r.get('images', '-'), r.get('precision', '-'),
                      fmt(r.get('s_per_iter'), '.3f'), fmt(r.get('peak_gib'), '.2f'),
                      _with_error(fmt(r.get('loss'), '.3f'), r)] for r in rows])


def _dist_lines(rows: List[dict]) -> List[str]:
    lines = []
    for r in rows:
        result = r['error'] if 'error' in r else (
            f'backend {r["backend"]}, world size {r["world_size"]}, {r["minutes"]:.1f} min, '
            f'bbox mAP {fmt(r.get("bbox_mAP"), ".3f")}')
        lines += ['', f'Quick start through `{r.get("command", "tools/dist_train.sh")}`: {result}']
    return lines


def summary(env: Dict[str, Any], results: Dict[str, List[dict]], notes: Sequence[str],
            targets: Optional[Targets] = None) -> str:
    """The markdown summary: the environment line, the notes, one table per section run and the
    backbone targets met or missed.

    Args:
        env: from :func:`environment`.
        results: section name -> its rows.
        notes: lines listed under the environment line.
        targets: the backbone targets (default :class:`Targets`' defaults).
    """
    targets = targets or Targets()
    md = [f'GPU check on **{env["device"]}** (torch {env["torch"]}, CUDA {env["cuda"]}, mmcv '
          f'{env["mmcv"]} with ops for CUDA {env["mmcv_ops_cuda"]})'
          f'{" in --tiny mode" if env["tiny"] else ""}:', '']
    md += [f'- {n}' for n in notes]
    if 'ops' in results:
        md += _ops_table(results['ops'])
    if 'backbones' in results:
        md += _backbones_table(results['backbones'], targets)
    if 'detectors' in results:
        md += _detectors_table(results['detectors'])
    md += _dist_lines(results.get('dist', []))
    return '\n'.join(md) + '\n'


def failed(results: Dict[str, List[dict]]) -> List[str]:
    """``'section: row'`` for each row that failed: an op that disagrees with its reference, an
    error, a step that failed, or an attention call without a fused kernel."""
    bad = []
    for section, rows in results.items():
        for r in rows:
            if r.get('ok') is False or 'error' in r or any(k.endswith('_error') for k in r) \
                    or any(str(r.get(k, '')).startswith('NO') for k in ('fused_fp32', 'fused_bf16')):
                bad.append(f'{section}: {r.get("op") or r.get("model") or r.get("command")}')
    return bad
