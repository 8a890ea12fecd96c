"""Speed, memory and efficiency of a backbone: forward, forward+backward, peak memory.

Measures, at one input shape and batch:

- forward time (eval mode, ``torch.inference_mode``): median and mean ms, images/s;
- forward+backward time (train mode, drop path / dropout set to 0): median ms;
- peak memory of one forward+backward: on CUDA ``torch.cuda.max_memory_allocated`` after
  a reset, minus what model and input already hold; on CPU the peak RSS increase over
  the idle process, measured in a fresh subprocess (baseline: RSS after building model
  and input; peak: the RSS high-water mark after one forward+backward, read from VmHWM
  reset at the baseline on Linux, since a child's ``ru_maxrss`` starts at its parent's
  peak; ``ru_maxrss`` elsewhere);
- FLOPs of one forward (``torch.utils.flop_counter``, attention included, as get_flops.py);
- the fp32 matmul rate of this device in this process (4096x4096, TF32 off on CUDA) and
  efficiency = FLOPs / forward time / matmul rate.

Examples::

    python tools/analysis/benchmark.py --backbone CrossFormer --arch small --shape 512 512 --threads 2
    python tools/analysis/benchmark.py --config configs/retinanet_crossformer_s_coco.py \\
        --shape 800 1216 --iters 5 --json out.json
    python tools/analysis/benchmark.py --backbone CrossFormer --arch small --device cuda --amp bf16
"""
import argparse
import contextlib
import gc
import importlib.util
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

_GF_NAME = 'mmhybrid_tools_get_flops'


def _load_get_flops():
    """get_flops.py from this folder (tools/ is not a package)."""
    if _GF_NAME in sys.modules:
        return sys.modules[_GF_NAME]
    path = Path(__file__).resolve().with_name('get_flops.py')
    spec = importlib.util.spec_from_file_location(_GF_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_GF_NAME] = module
    spec.loader.exec_module(module)
    return module


gf = _load_get_flops()

GIB = 1024 ** 3
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


# ---------------------------------------------------------------------------------------
# model preparation
# ---------------------------------------------------------------------------------------

def zero_stochastic_layers(model: nn.Module) -> int:
    """Set drop-path and dropout probabilities to 0 (any DropPath with ``drop_prob``,
    ``nn.Dropout*``); returns how many modules were changed."""
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
    """Benchmark settings on a backbone config: drop path 0, optional checkpointing,
    no pretrained weights."""
    cfg = dict(cfg)
    if 'drop_path_rate' in cfg:
        cfg['drop_path_rate'] = 0.0
    if with_cp:
        cfg['with_cp'] = True
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    return cfg


def build_for_benchmark(spec: Dict[str, Any]) -> nn.Module:
    """Build the backbone described by ``spec`` (see :func:`make_spec`) on its device."""
    gf.import_project(spec.get('import_modules', ()))
    cfg = dict(spec['backbone_cfg'])
    if spec.get('default_scope') is None and 'drop_path_rate' not in cfg:
        # our backbones take drop_path_rate; do not force it on types that do not
        try:
            model = gf.build_backbone(dict(cfg, drop_path_rate=0.0))
        except TypeError as err:
            if 'drop_path_rate' not in str(err):
                raise
            model = gf.build_backbone(cfg)
    else:
        model = gf.build_backbone(cfg, default_scope=spec.get('default_scope'))
    zero_stochastic_layers(model)
    return model.to(spec['device'])


def make_input(spec: Dict[str, Any]) -> torch.Tensor:
    h, w = gf.resolve_shape(spec['shape'])
    return torch.randn(spec['batch'], spec.get('in_channels', 3), h, w, device=spec['device'])


# ---------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------

def _sync(device) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device, amp: Optional[str]):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def _tensors(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _loss(out) -> torch.Tensor:
    ts = [t for t in _tensors(out) if t.is_floating_point() and t.requires_grad]
    if not ts:
        raise RuntimeError('the model output has no tensor that requires grad')
    return sum(t.float().mean() for t in ts)


def _timed(fn: Callable[[], Any], device, warmup: int, iters: int) -> List[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def time_forward(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                 amp: Optional[str] = None) -> List[float]:
    """ms per forward, eval mode, inference mode."""
    model.eval()

    def step():
        with torch.inference_mode(), _autocast(x.device, amp):
            return model(x)

    return _timed(step, x.device, warmup, iters)


def forward_backward(model: nn.Module, x: torch.Tensor, amp: Optional[str] = None) -> None:
    """One training step without the optimizer: forward, mean of the outputs, backward."""
    with _autocast(x.device, amp):
        out = model(x)
    _loss(out).backward()
    del out


def time_forward_backward(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                          amp: Optional[str] = None) -> List[float]:
    """ms per forward+backward, train mode (gradients cleared before each step)."""
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        forward_backward(model, x, amp)

    try:
        return _timed(step, x.device, warmup, iters)
    finally:
        model.zero_grad(set_to_none=True)


def _proc_status_bytes(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss_bytes() -> Optional[int]:
    """Resident set size now (Linux /proc), or None where unavailable."""
    return _proc_status_bytes('VmRSS')


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0,
    ``/proc/self/clear_refs``); False where that is not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    hwm, rss = _proc_status_bytes('VmHWM'), current_rss_bytes()
    return hwm is not None and rss is not None and hwm <= rss + (64 << 20)


def max_rss_bytes() -> int:
    """Peak RSS of this process so far (ru_maxrss: KiB on Linux, bytes on macOS).

    Note: after fork+exec, Linux starts a child's ru_maxrss at the parent's peak, so in a
    subprocess of a large parent it can stay above the child's own peak.
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == 'darwin' else int(rss) * 1024


def cpu_peak_memory_in_this_process(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Build, take the baseline RSS, run one forward+backward, read the peak RSS.

    Meant to run in a fresh process (see :func:`cpu_peak_memory`). The peak is the RSS
    high-water mark (VmHWM) reset at the baseline where Linux allows it, else ru_maxrss.
    """
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    model = build_for_benchmark(spec)
    x = make_input(spec)
    model.train()
    gc.collect()
    baseline = current_rss_bytes()
    hwm_reset = baseline is not None and reset_peak_rss()
    peak_before = max_rss_bytes()
    if baseline is None:
        baseline = peak_before
    forward_backward(model, x, spec.get('amp'))
    ru_peak = max_rss_bytes()
    if hwm_reset:
        peak = _proc_status_bytes('VmHWM')
        method = 'cpu: peak RSS increase over idle process (fresh subprocess, VmHWM reset ' \
                 'after building model+input)'
        lower_bound = False
    else:
        peak = ru_peak
        method = 'cpu: peak RSS increase over idle process (fresh subprocess, ru_maxrss)'
        # the high-water mark was not raised by the step: a lower bound only
        lower_bound = ru_peak <= peak_before
    return dict(method=method, baseline_bytes=baseline, peak_bytes=peak,
                increase_bytes=peak - baseline, lower_bound=lower_bound,
                ru_maxrss_bytes=ru_peak)


def cpu_peak_memory(spec: Dict[str, Any], timeout: float = 3600) -> Dict[str, Any]:
    """:func:`cpu_peak_memory_in_this_process` in a fresh subprocess of this script."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--memory-child'],
                          input=pickle.dumps(spec), capture_output=True, timeout=timeout,
                          env=env)
    marker = b'MEMORY_RESULT '
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError('memory subprocess failed (rc=%d):\n%s' % (
        proc.returncode, proc.stderr.decode(errors='replace')[-4000:]))


def cuda_peak_memory(model: nn.Module, x: torch.Tensor,
                     amp: Optional[str] = None) -> Dict[str, Any]:
    """Peak CUDA memory of one forward+backward (after a reset), and its increase over
    what is allocated before it (model, input)."""
    model.train()
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.synchronize(x.device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(x.device)
    baseline = torch.cuda.memory_allocated(x.device)
    forward_backward(model, x, amp)
    torch.cuda.synchronize(x.device)
    peak = torch.cuda.max_memory_allocated(x.device)
    model.zero_grad(set_to_none=True)
    return dict(method='cuda: max_memory_allocated after reset, minus model+input',
                baseline_bytes=baseline, peak_bytes=peak, increase_bytes=peak - baseline,
                lower_bound=False)


@contextlib.contextmanager
def _no_tf32():
    m = torch.backends.cuda.matmul
    if hasattr(m, 'fp32_precision'):
        old = m.fp32_precision
        m.fp32_precision = 'ieee'
        try:
            yield
        finally:
            m.fp32_precision = old
    else:
        old = m.allow_tf32
        m.allow_tf32 = False
        try:
            yield
        finally:
            m.allow_tf32 = old


def matmul_rate(device='cpu', size: int = 4096, reps: int = 3,
                dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a size x size matmul (2*size^3 FLOPs), median of ``reps`` after one
    warm-up. fp32 on CUDA runs with TF32 disabled."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ctx = _no_tf32() if torch.device(device).type == 'cuda' else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        times = _timed(lambda: torch.mm(a, b), device, warmup=1, iters=max(1, reps))
    del a, b
    return 2.0 * size ** 3 / (statistics.median(times) / 1000.0) / 1e9


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------

def make_spec(args) -> Dict[str, Any]:
    """What to build and run, picklable (the memory subprocess rebuilds from it)."""
    if args.config:
        cfg = gf.load_config(args.config, args.cfg_options)
        bcfg = gf.backbone_cfg_from_config(cfg)
        bcfg.update(args.backbone_args or {})
        scope = gf.config_scope(cfg)
        source = f'model.backbone of {args.config}'
    else:
        bcfg = gf.backbone_cfg_from_args(args)
        scope = None
        source = 'backbone'
    device = args.device
    if torch.device(device).type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device')
    return dict(backbone_cfg=prepare_backbone_cfg(bcfg, args.with_cp), default_scope=scope,
                source=source, import_modules=list(args.import_module),
                shape=list(gf.resolve_shape(args.shape)), batch=args.batch,
                in_channels=args.in_channels, device=device, threads=args.threads,
                amp=args.amp)


def run_benchmark(spec: Dict[str, Any], warmup: int = 2, iters: int = 10,
                  matmul_size: int = 4096, matmul_reps: int = 3,
                  memory: bool = True) -> Dict[str, Any]:
    """All measurements for ``spec``; returns a flat dict of numbers (see the table)."""
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    device = spec['device']
    amp = spec.get('amp')
    torch.manual_seed(0)
    model = build_for_benchmark(spec)
    x = make_input(spec)
    res: Dict[str, Any] = dict(
        model=type(model).__name__, backbone_cfg={k: repr(v) if not isinstance(
            v, (int, float, str, bool, type(None))) else v for k, v in spec['backbone_cfg'].items()},
        source=spec['source'], input_shape=list(x.shape), batch=spec['batch'], device=str(device),
        dtype=f'autocast {amp}' if amp else 'fp32', threads=torch.get_num_threads(),
        with_cp=bool(spec['backbone_cfg'].get('with_cp', False)), warmup=warmup, iters=iters,
        params_m=gf.count_params(model) / 1e6)

    # FLOPs of one forward (eval, no grad), as get_flops.py counts them
    model.eval()
    with torch.no_grad(), _autocast(device, amp):
        flops = gf.count_flops(lambda: model(x), root=None)
    res['forward_gflops'] = flops['total'] / 1e9
    res['forward_gmacs'] = flops['total'] / 2e9
    res['attention_gflops'] = flops['attention'] / 1e9

    # device matmul rate, in this process
    res['matmul_size'] = matmul_size
    res['matmul_fp32_gflops_per_s'] = matmul_rate(device, matmul_size, matmul_reps)
    res['matmul_tf32'] = False if torch.device(device).type == 'cuda' else None
    if torch.device(device).type == 'cuda':
        # what the model itself runs with (torch defaults: matmul no TF32, cuDNN conv TF32)
        res['model_tf32'] = dict(matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                                 cudnn=bool(torch.backends.cudnn.allow_tf32))
    if amp:
        res[f'matmul_{amp}_gflops_per_s'] = matmul_rate(device, matmul_size, matmul_reps,
                                                        AMP_DTYPES[amp])

    fwd = time_forward(model, x, warmup, iters, amp)
    res['forward_ms_median'] = statistics.median(fwd)
    res['forward_ms_mean'] = statistics.fmean(fwd)
    res['forward_ms_min'] = min(fwd)
    res['images_per_s'] = spec['batch'] * 1000.0 / res['forward_ms_median']

    fb = time_forward_backward(model, x, warmup, iters, amp)
    res['fwd_bwd_ms_median'] = statistics.median(fb)
    res['fwd_bwd_ms_mean'] = statistics.fmean(fb)

    rate = res['matmul_fp32_gflops_per_s']
    achieved = res['forward_gflops'] / (res['forward_ms_median'] / 1000.0)
    res['achieved_gflops_per_s'] = achieved
    res['efficiency_pct'] = 100.0 * achieved / rate
    if amp:
        res[f'efficiency_vs_{amp}_matmul_pct'] = \
            100.0 * achieved / res[f'matmul_{amp}_gflops_per_s']

    if memory:
        if torch.device(device).type == 'cuda':
            mem = cuda_peak_memory(model, x, amp)
        else:
            del model, x
            gc.collect()
            mem = cpu_peak_memory(spec)
        res['memory_method'] = mem['method']
        res['fwd_bwd_peak_mem_gib'] = mem['increase_bytes'] / GIB
        res['fwd_bwd_peak_abs_gib'] = mem['peak_bytes'] / GIB
        res['mem_baseline_gib'] = mem['baseline_bytes'] / GIB
        res['mem_lower_bound'] = mem['lower_bound']
    return res


def format_table(res: Dict[str, Any]) -> str:
    cfg = ', '.join(f'{k}={v}' for k, v in res['backbone_cfg'].items())
    rows = [
        ('model', f'{res["model"]} ({res["source"]}: {cfg})'),
        ('input', f'{tuple(res["input_shape"])}  batch {res["batch"]}'),
        ('device', f'{res["device"]}, {res["dtype"]}, {res["threads"]} threads, '
                   f'with_cp={res["with_cp"]}, warmup {res["warmup"]}, iters {res["iters"]}'),
        ('params', f'{res["params_m"]:.3f} M'),
        ('forward FLOPs', f'{res["forward_gflops"]:.2f} GFLOPs = {res["forward_gmacs"]:.2f} GMACs'
                          f' (papers\' "FLOPs"); attention {res["attention_gflops"]:.2f} GFLOPs'),
        ('forward median / mean', f'{res["forward_ms_median"]:.1f} / {res["forward_ms_mean"]:.1f}'
                                  f' ms  (eval, inference_mode)'),
        ('throughput', f'{res["images_per_s"]:.2f} images/s'),
        ('fwd+bwd median', f'{res["fwd_bwd_ms_median"]:.1f} ms  (train mode, drop path 0)'),
    ]
    if 'fwd_bwd_peak_mem_gib' in res:
        note = ' (lower bound: ru_maxrss not raised)' if res['mem_lower_bound'] else ''
        rows.append(('fwd+bwd peak memory', f'{res["fwd_bwd_peak_mem_gib"]:.3f} GiB{note}  '
                     f'[{res["memory_method"]}; peak {res["fwd_bwd_peak_abs_gib"]:.3f} GiB, '
                     f'baseline {res["mem_baseline_gib"]:.3f} GiB]'))
    tf32 = ', TF32 off' if res.get('matmul_tf32') is False else ''
    rows.append(('fp32 matmul rate', f'{res["matmul_fp32_gflops_per_s"]:.1f} GFLOP/s '
                 f'({res["matmul_size"]}x{res["matmul_size"]}{tf32})'))
    if 'model_tf32' in res:
        rows.append(('model TF32', f'matmul={res["model_tf32"]["matmul"]}, '
                     f'cudnn conv={res["model_tf32"]["cudnn"]} (torch settings in effect)'))
    rows.append(('achieved', f'{res["achieved_gflops_per_s"]:.1f} GFLOP/s in the forward'))
    rows.append(('efficiency', f'{res["efficiency_pct"]:.1f} %  (FLOPs / forward time / '
                 'fp32 matmul rate)'))
    for k, v in res.items():
        if k.startswith('efficiency_vs_'):
            rows.append((k.replace('_pct', '').replace('_', ' '), f'{v:.1f} %'))
    width = max(len(r[0]) for r in rows)
    line = '-' * 78
    return '\n'.join([line] + [f'{k:<{width}}  {v}' for k, v in rows] + [line])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Forward / forward+backward time, peak memory, FLOPs and efficiency of '
        'a backbone', formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    gf.add_model_args(parser, config_positional=False)
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512],
                        help='input H W (or one int), default 512 512')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--in-channels', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s choice)')
    parser.add_argument('--amp', nargs='?', const='bf16', choices=sorted(AMP_DTYPES),
                        default=None, help='autocast dtype (bf16 when given alone); for cuda')
    parser.add_argument('--with-cp', action='store_true',
                        help='build the backbone with with_cp=True (activation checkpointing)')
    parser.add_argument('--matmul-size', type=int, default=4096)
    parser.add_argument('--matmul-reps', type=int, default=3)
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--memory-child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.memory_child:
        if args.config and (args.backbone or args.backbone_cfg):
            parser.error('give either --config or --backbone/--backbone-cfg, not both')
        if not args.config and not (args.backbone or args.backbone_cfg):
            parser.error('give --config, --backbone or --backbone-cfg')
        gf.resolve_shape(args.shape)
        if args.iters < 1:
            parser.error('--iters must be >= 1')
    return args


def _memory_child() -> None:
    spec = pickle.loads(sys.stdin.buffer.read())
    result = cpu_peak_memory_in_this_process(spec)
    sys.stdout.write('MEMORY_RESULT ' + json.dumps(result) + '\n')
    sys.stdout.flush()


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.memory_child:
        _memory_child()
        return {}
    gf.import_project(args.import_module)
    spec = make_spec(args)
    if args.amp and torch.device(args.device).type != 'cuda':
        print(f'note: --amp {args.amp} on {args.device}: CPU autocast', file=sys.stderr)
    res = run_benchmark(spec, warmup=args.warmup, iters=args.iters,
                        matmul_size=args.matmul_size, matmul_reps=args.matmul_reps,
                        memory=not args.no_memory)
    print(format_table(res))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == '__main__':
    main()
