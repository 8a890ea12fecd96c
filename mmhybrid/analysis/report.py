"""Text and markdown reports of :mod:`mmhybrid.analysis` results."""
import os
import platform
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import measure

__all__ = ['benchmark_table', 'command_line', 'describe_machine', 'flops_json',
           'flops_report', 'markdown_report', 'module_table']


# ---------------------------------------------------------------------------------------
# FLOPs (get_flops)
# ---------------------------------------------------------------------------------------

def _g(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x / 1e9:.3f}'


def module_table(result: Dict[str, Any], depth: int) -> str:
    """Per-module FLOPs / params, ``depth`` levels below the model.

    Args:
        result: from :func:`mmhybrid.analysis.flops.analyze_model`.
        depth: levels below the model to list.
    """
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


def flops_report(result: Dict[str, Any], title: str, depth: Optional[int] = None) -> str:
    """The get_flops report: FLOPs, MACs, attention share, params, FLOPs by op.

    Args:
        result: from :func:`mmhybrid.analysis.flops.analyze_model`.
        title: the model line.
        depth: also a per-module table this many levels deep.
    """
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


def flops_json(result: Dict[str, Any], title: str) -> Dict[str, Any]:
    """What get_flops writes with ``--json``: the result without the per-module tables,
    with ``title``, ``gflops``, ``gmacs`` and ``params_m``.

    Args:
        result: from :func:`mmhybrid.analysis.flops.analyze_model`.
        title: the model line.
    """
    out = {k: v for k, v in result.items() if k not in ('module_params', 'per_module')}
    out.update(title=title, gflops=result['total'] / 1e9, gmacs=result['total'] / 2e9,
               params_m=result['params'] / 1e6)
    return out


# ---------------------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------------------

def _memory_text(m: Dict[str, Any]) -> str:
    note = ' (lower bound: ru_maxrss not raised)' if m.get('mem_lower_bound') else ''
    return f'{m["peak_mem_gib"]:.3f} GiB{note}'


def benchmark_table(res: Dict[str, Any]) -> str:
    """The text report of one :func:`mmhybrid.analysis.benchmark.run_benchmark` result.

    Args:
        res: the result.
    """
    cfg = ', '.join(f'{k}={v}' for k, v in res['backbone_cfg'].items())
    rows = [
        ('model', f'{res["model"]} ({res["source"]}: {cfg})'),
        ('input', f'{tuple(res["input_shape"])}  batch {res["batch"]}'),
        ('device', f'{res["device"]}, {res["dtype"]}, {res["threads"]} threads, '
                   f'with_cp={res["with_cp"]}, warmup {res["warmup"]}, iters {res["iters"]}'),
        ('params', f'{res["params_m"]:.3f} M'),
        ('forward FLOPs', f'{res["forward_gflops"]:.2f} GFLOPs = {res["forward_gmacs"]:.2f} GMACs'
                          f' (papers\' "FLOPs"); attention {res["attention_gflops"]:.2f} GFLOPs'),
    ]
    if 'train_gflops' in res:
        rows.append(('fwd+bwd FLOPs', f'{res["train_gflops"]:.2f} GFLOPs'))
    modes = res.get('modes', {})
    if 'forward' in modes:
        rows.append(('forward median / mean', f'{res["forward_ms_median"]:.1f} / '
                     f'{res["forward_ms_mean"]:.1f} ms  (eval, inference_mode)'))
        rows.append(('throughput', f'{res["images_per_s"]:.2f} images/s'))
    if 'train' in modes:
        rows.append(('fwd+bwd median', f'{res["fwd_bwd_ms_median"]:.1f} ms  '
                     '(train mode, drop path 0)'))
        if 'fwd_bwd_peak_mem_gib' in res:
            rows.append(('fwd+bwd peak memory', f'{_memory_text(modes["train"])}  '
                         f'[{res["memory_method"]}; peak {res["fwd_bwd_peak_abs_gib"]:.3f} GiB, '
                         f'baseline {res["mem_baseline_gib"]:.3f} GiB]'))
    for name, m in modes.items():
        if name in ('forward', 'train'):
            continue
        text = f'{m["ms_median"]:.1f} ms, {m["images_per_s"]:.2f} images/s, ' \
               f'efficiency {m["efficiency_pct"]:.1f} % of the {m["peak_precision"]} peak'
        if 'peak_mem_gib' in m:
            text += f', peak memory {_memory_text(m)}'
        rows.append((f'{name} median', f'{text}  ({m["kind"]}, {m["precision"]})'))
    rows += _peak_rows(res)
    if 'model_tf32' in res:
        rows.append(('model TF32', f'matmul={res["model_tf32"]["matmul"]}, '
                     f'cudnn conv={res["model_tf32"]["cudnn"]} (torch settings in effect)'))
    if 'forward' in modes:
        rows.append(('achieved', f'{res["achieved_gflops_per_s"]:.1f} GFLOP/s in the forward'))
        rows.append(('efficiency', f'{res["efficiency_pct"]:.1f} %  (FLOPs / forward time / '
                     f'{modes["forward"]["peak_precision"]} peak GEMM rate)'))
    width = max(len(r[0]) for r in rows)
    line = '-' * 78
    return '\n'.join([line] + [f'{k:<{width}}  {v}' for k, v in rows] + [line])


def _peak_rows(res: Dict[str, Any]) -> List[Tuple[str, str]]:
    """One row per peak GEMM rate of the run: its precision, rate and best shape."""
    tf32 = ', TF32 off' if res.get('gemm_tf32') is False else ''
    rows = []
    for precision in measure.PRECISION_DTYPES:
        rate = res.get(f'peak_{precision}_gflops_per_s')
        if rate is not None:
            note = f' (best GEMM shape {res[f"peak_{precision}_gemm"]}' + \
                (tf32 if precision == 'fp32' else '') + ')'
            rows.append((f'{precision} peak GEMM rate', f'{rate:.1f} GFLOP/s{note}'))
    return rows


def _peak_rates_text(results: Sequence[Dict[str, Any]]) -> str:
    """The peak rates of several runs, by precision: ``fp32 152.3, bf16 801.0 GFLOP/s``."""
    parts = []
    for precision in measure.PRECISION_DTYPES:
        key = f'peak_{precision}_gflops_per_s'
        rates = sorted({f'{r[key]:.1f}' for r in results if key in r}, key=float)
        if rates:
            parts.append(f'{precision} {" / ".join(rates)}')
    return ', '.join(parts) + ' GFLOP/s'


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def describe_machine(device: str = 'cpu') -> str:
    """One line naming the machine: CPU model, cores, torch threads, torch version, device.

    Args:
        device: the device measured; a CUDA device is named with its GPU.
    """
    text = f'{_cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch ' \
           f'threads, torch {torch.__version__}, device {device}'
    if torch.device(device).type == 'cuda' and torch.cuda.is_available():
        text += f' ({torch.cuda.get_device_name(torch.device(device))}, CUDA {torch.version.cuda})'
    return text


def command_line(script: str, argv: Sequence[str]) -> str:
    """``python <script> <argv>`` quoted for a shell, the script relative to the current
    folder when it is inside it.

    Args:
        script: the script path as run (``sys.argv[0]``).
        argv: its arguments.
    """
    path = os.path.abspath(script)
    rel = os.path.relpath(path, os.getcwd())
    if not rel.startswith(os.pardir):
        script = rel
    return shlex.join(['python', script] + [str(a) for a in argv])


_COLUMNS = ('backbone', 'input', 'mode', 'precision', 'median ms', 'images/s', 'GFLOPs',
            'efficiency', 'peak memory')


def _markdown_row(res: Dict[str, Any], m: Dict[str, Any]) -> List[str]:
    _, _, h, w = res['input_shape']
    shape = f'{h}x{w}' + (f', batch {res["batch"]}' if res['batch'] != 1 else '')
    mem = _memory_text(m) if 'peak_mem_gib' in m else 'n/a'
    return [res['label'], shape, m['mode'], m['precision'], f'{m["ms_median"]:.1f}',
            f'{m["images_per_s"]:.2f}', f'{m["gflops"]:.2f}', f'{m["efficiency_pct"]:.1f}%', mem]


def markdown_report(results: Sequence[Dict[str, Any]], command: str,
                    machine: Optional[str] = None) -> str:
    """The benchmark results as markdown: a line naming the machine and the command, a
    table with one row per backbone / input / mode, and the definitions.

    Args:
        results: :func:`mmhybrid.analysis.benchmark.run_benchmark` results.
        command: the command line that produced them (see :func:`command_line`).
        machine: the machine line; default :func:`describe_machine` of the first
            result's device.
    """
    if machine is None:
        machine = describe_machine(results[0]['device'] if results else 'cpu')
    lines = [f'Measured on {machine}, with `{command}`:', '',
             '| ' + ' | '.join(_COLUMNS) + ' |', '|' + '---|' * len(_COLUMNS)]
    for res in results:
        for m in res['modes'].values():
            lines.append('| ' + ' | '.join(_markdown_row(res, m)) + ' |')
    method = next((r['memory_method'] for r in results if 'memory_method' in r), None)
    lines += ['', 'GFLOPs: counted FLOPs of one step (forward, or forward+backward for train '
              'modes; multiply-add = 2). Efficiency = GFLOPs / median time / peak GEMM rate '
              'of the mode\'s precision (fp32, or the autocast dtype): the best of several '
              f'large GEMM shapes, measured in the same run ({_peak_rates_text(results)}). '
              'Train modes: train mode, drop path 0, forward + backward without optimizer.'
              + (f' Peak memory of one step: {method}.' if method else '')]
    return '\n'.join(lines) + '\n'
