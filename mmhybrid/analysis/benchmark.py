"""Speed, memory and efficiency of a backbone, per mode.

A *mode* is a kind of step and a precision (:class:`Mode`):

- ``forward``: eval mode, ``torch.inference_mode``, fp32 (or the run's ``amp``);
- ``train``: train mode (drop path / dropout set to 0), forward + mean of the outputs +
  backward, no optimizer, fp32 (or the run's ``amp``);
- ``forward-bf16`` / ``train-bf16`` (and ``-fp16``): the same under
  ``torch.autocast(device_type, dtype)``.

For each mode: median / mean / min ms, images/s, the counted FLOPs of one step
(``torch.utils.flop_counter``, attention included; forward+backward for train modes),
efficiency = FLOPs / median time / this device's peak GEMM rate in the mode's precision
(fp32, or the autocast dtype: :func:`mmhybrid.analysis.measure.peak_gemm_rate`, measured
in this process), and the peak memory of one step (:mod:`mmhybrid.analysis.measure`; on
CPU measured in a fresh subprocess, all modes in one).
"""
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from . import build, measure
from .flops import count_flops, count_params

__all__ = ['DEFAULT_MODES', 'MODE_NAMES', 'Mode', 'build_for_benchmark', 'cpu_peak_memory',
           'make_input', 'make_spec', 'measure_peaks', 'mode_precisions', 'parse_modes',
           'run_benchmark']

MODE_NAMES = ('forward', 'train', 'forward-bf16', 'train-bf16', 'forward-fp16', 'train-fp16')
DEFAULT_MODES = ('forward', 'train', 'forward-bf16', 'train-bf16')


@dataclass(frozen=True)
class Mode:
    """What one measurement runs.

    Args:
        name: as given (``'forward'``, ``'train-bf16'``, ...).
        train: forward+backward in train mode (True) or forward in eval mode (False).
        amp: autocast dtype (``'bf16'``, ``'fp16'``) or None for fp32.
    """
    name: str
    train: bool
    amp: Optional[str] = None

    @property
    def precision(self) -> str:
        return f'autocast {self.amp}' if self.amp else 'fp32'

    @property
    def peak_precision(self) -> str:
        """The precision of the peak GEMM rate its efficiency divides by: ``'fp32'`` or the
        autocast dtype."""
        return self.amp or 'fp32'

    @property
    def key(self) -> str:
        """The name as a JSON key prefix: ``train_bf16``."""
        return self.name.replace('-', '_')


def parse_modes(names: Union[str, Sequence[str]], amp: Optional[str] = None) -> List[Mode]:
    """Modes from ``'forward,train,forward-bf16'`` (or a list of names).

    Args:
        names: comma-separated names or a list, each one of :data:`MODE_NAMES`.
        amp: the run's autocast dtype: the precision of the plain ``forward`` / ``train``.
            A mode that repeats an earlier one (``forward-bf16`` with ``amp='bf16'``) is
            left out.

    Returns:
        the modes, in the order given.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(',') if n.strip()]
    modes, seen = [], set()
    for name in names:
        if name not in MODE_NAMES:
            raise ValueError(f'unknown mode {name!r}; choose from {", ".join(MODE_NAMES)}')
        kind, _, dtype = name.partition('-')
        mode = Mode(name, kind == 'train', dtype or amp)
        if (mode.train, mode.amp) not in seen:
            seen.add((mode.train, mode.amp))
            modes.append(mode)
    if not modes:
        raise ValueError('no mode to run')
    return modes


# ---------------------------------------------------------------------------------------
# what to build
# ---------------------------------------------------------------------------------------

def make_spec(backbone_cfg: dict, *, default_scope: Optional[str] = None,
              source: str = 'backbone', import_modules: Sequence[str] = (),
              shape: Sequence[int] = (512, 512), batch: int = 1, in_channels: int = 3,
              device: str = 'cpu', threads: Optional[int] = None, amp: Optional[str] = None,
              with_cp: bool = False) -> Dict[str, Any]:
    """What to build and run, as a picklable dict (the memory subprocess rebuilds from it).

    The backbone gets the benchmark settings of :func:`build.prepare_backbone_cfg`, and
    ``drop_path_rate=0.0`` when its class takes that argument (read from its signature).

    Args:
        backbone_cfg: backbone config with a ``type``.
        default_scope: None for a backbone named on the command line (mmhybrid scope), or
            the scope of the config file it comes from.
        source: where it comes from, for the report.
        import_modules: modules to import first (they may register the type).
        shape: ``[s]`` or ``[h, w]``.
        batch: batch size.
        in_channels: input channels.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        threads: ``torch.set_num_threads``, or None for torch's choice.
        amp: autocast dtype of the plain modes (and of the FLOP count), or None for fp32.
        with_cp: build with ``with_cp=True`` (activation checkpointing).
    """
    if torch.device(device).type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device {device}: no CUDA device')
    build.import_project(import_modules)
    cfg = build.prepare_backbone_cfg(backbone_cfg, with_cp)
    if 'drop_path_rate' not in cfg and build.accepts_argument(cfg, 'drop_path_rate',
                                                              default_scope):
        cfg['drop_path_rate'] = 0.0
    return dict(backbone_cfg=cfg, default_scope=default_scope, source=source,
                import_modules=list(import_modules), shape=list(build.resolve_shape(shape)),
                batch=batch, in_channels=in_channels, device=device, threads=threads, amp=amp)


def build_for_benchmark(spec: Dict[str, Any]) -> nn.Module:
    """Build the backbone of ``spec`` (see :func:`make_spec`) on its device, drop path and
    dropout set to 0.

    Args:
        spec: from :func:`make_spec`.
    """
    build.import_project(spec.get('import_modules', ()))
    model = build.build_backbone(spec['backbone_cfg'], default_scope=spec.get('default_scope'))
    build.zero_stochastic_layers(model)
    return model.to(spec['device'])


def make_input(spec: Dict[str, Any]) -> torch.Tensor:
    """A random input of ``spec``'s batch, channels and shape on its device.

    Args:
        spec: from :func:`make_spec`.
    """
    h, w = build.resolve_shape(spec['shape'])
    return torch.randn(spec['batch'], spec.get('in_channels', 3), h, w, device=spec['device'])


# ---------------------------------------------------------------------------------------
# memory on CPU: a fresh subprocess
# ---------------------------------------------------------------------------------------

def _memory_in_this_process(spec: Dict[str, Any], modes: Sequence[Mode]) -> Dict[str, Any]:
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    model = build_for_benchmark(spec)
    x = make_input(spec)
    result = {}
    for mode in modes:
        model.zero_grad(set_to_none=True)
        result[mode.name] = measure.cpu_step_memory(measure.make_step(model, x, mode.train,
                                                                      mode.amp))
    return result


_MARKER = 'MEMORY_RESULT '


def memory_child_main() -> None:
    """Entry point of the memory subprocess: ``(spec, modes)`` pickled on stdin, one
    ``MEMORY_RESULT <json>`` line on stdout."""
    spec, modes = pickle.loads(sys.stdin.buffer.read())
    result = _memory_in_this_process(spec, modes)
    sys.stdout.write(_MARKER + json.dumps(result) + '\n')
    sys.stdout.flush()


def cpu_peak_memory(spec: Dict[str, Any], modes: Sequence[Mode] = (Mode('train', True),),
                    timeout: float = 3600) -> Dict[str, Dict[str, Any]]:
    """Peak RSS increase of one step per mode, in a fresh Python process.

    The child builds the model and input, then for each mode in order releases freed
    memory, takes the baseline RSS, resets the high-water mark and runs one step
    (:func:`measure.cpu_step_memory`).

    Args:
        spec: from :func:`make_spec`.
        modes: the modes to measure.
        timeout: seconds before the child is killed.

    Returns:
        mode name -> the :func:`measure.cpu_step_memory` dict.
    """
    env = dict(os.environ)
    # the child imports the same mmhybrid as this process
    package_root = str(Path(__file__).resolve().parents[2])
    env['PYTHONPATH'] = os.pathsep.join(
        [package_root] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    code = 'from mmhybrid.analysis.benchmark import memory_child_main; memory_child_main()'
    proc = subprocess.run([sys.executable, '-c', code], input=pickle.dumps((spec, list(modes))),
                          capture_output=True, timeout=timeout, env=env)
    marker = _MARKER.encode()
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError('memory subprocess failed (rc=%d):\n%s' % (
        proc.returncode, proc.stderr.decode(errors='replace')[-4000:]))


def _cuda_peak_memory(model: nn.Module, x: torch.Tensor,
                      modes: Sequence[Mode]) -> Dict[str, Dict[str, Any]]:
    result = {}
    for mode in modes:
        model.zero_grad(set_to_none=True)
        result[mode.name] = measure.cuda_step_memory(
            measure.make_step(model, x, mode.train, mode.amp), x.device)
    model.zero_grad(set_to_none=True)
    return result


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------

def mode_precisions(modes: Sequence[Mode]) -> List[str]:
    """The precisions whose peak rates the efficiencies of ``modes`` divide by, in order.

    Args:
        modes: the modes.
    """
    return list(dict.fromkeys(mode.peak_precision for mode in modes))


def measure_peaks(device: str = 'cpu', precisions: Sequence[str] = ('fp32',),
                  shapes: Optional[Sequence[Sequence[int]]] = None,
                  reps: int = 2) -> Dict[str, Any]:
    """The device's peak GEMM rates, as :func:`run_benchmark` reports them (measure once,
    pass to several runs).

    Args:
        device: where to run.
        precisions: ``'fp32'``, ``'bf16'``, ``'fp16'`` (see :func:`mode_precisions`).
        shapes: the GEMM shapes ``(M, K, N)``; default :data:`measure.GEMM_SHAPES`.
        reps: timed calls per shape.

    Returns:
        for each precision ``p``: ``peak_<p>_gflops_per_s`` and ``peak_<p>_gemm`` (the
        shape that gave it, ``'MxKxN'``); ``gemm_tf32`` (False on CUDA: fp32 GEMMs ran
        without TF32; None on CPU).
    """
    res: Dict[str, Any] = dict(gemm_tf32=False if measure.is_cuda(device) else None)
    for precision in precisions:
        peak = measure.peak_gemm_rate(device, precision, shapes, reps)
        res[f'peak_{precision}_gflops_per_s'] = peak['gflops_per_s']
        res[f'peak_{precision}_gemm'] = peak['shape']
    return res


def _step_flops(model: nn.Module, x: torch.Tensor, train: bool, amp: Optional[str]) -> dict:
    """Counted FLOPs of one step (forward under no_grad, or forward+backward)."""
    if train:
        step = measure.make_step(model, x, True, amp)
        try:
            return count_flops(step)
        finally:
            model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad(), measure.autocast(x.device, amp):
        counted = count_flops(lambda: model(x))
    counted.pop('output')  # do not keep the outputs alive
    return counted


def _mode_result(mode: Mode, times: List[float], gflops: float, batch: int,
                 peak_rate: float) -> Dict[str, Any]:
    median = statistics.median(times)
    achieved = gflops / (median / 1000.0)
    return dict(mode=mode.name, kind='train' if mode.train else 'forward',
                precision=mode.precision, ms_median=median, ms_mean=statistics.fmean(times),
                ms_min=min(times), images_per_s=batch * 1000.0 / median, gflops=gflops,
                achieved_gflops_per_s=achieved, peak_precision=mode.peak_precision,
                peak_gflops_per_s=peak_rate, efficiency_pct=100.0 * achieved / peak_rate)


def _add_memory(res: Dict[str, Any], memory: Dict[str, Dict[str, Any]]) -> None:
    for name, mem in memory.items():
        res['modes'][name].update(peak_mem_gib=mem['increase_bytes'] / measure.GIB,
                                  peak_abs_gib=mem['peak_bytes'] / measure.GIB,
                                  mem_baseline_gib=mem['baseline_bytes'] / measure.GIB,
                                  mem_lower_bound=mem['lower_bound'])
        res['memory_method'] = mem['method']
    train = res['modes'].get('train')
    if train is not None and 'peak_mem_gib' in train:  # the fields of earlier versions
        res.update(fwd_bwd_peak_mem_gib=train['peak_mem_gib'],
                   fwd_bwd_peak_abs_gib=train['peak_abs_gib'],
                   mem_baseline_gib=train['mem_baseline_gib'],
                   mem_lower_bound=train['mem_lower_bound'])


def _describe_run(spec: Dict[str, Any], model: nn.Module, x: torch.Tensor, warmup: int,
                  iters: int) -> Dict[str, Any]:
    """What is measured and how: model, input, device, precision, threads, parameters."""
    amp = spec.get('amp')
    return dict(
        model=type(model).__name__, label=build.describe_backbone(spec['backbone_cfg']),
        backbone_cfg=build.printable_cfg(spec['backbone_cfg']), source=spec['source'],
        input_shape=list(x.shape), batch=spec['batch'], device=str(spec['device']),
        dtype=f'autocast {amp}' if amp else 'fp32', threads=torch.get_num_threads(),
        with_cp=bool(spec['backbone_cfg'].get('with_cp', False)), warmup=warmup, iters=iters,
        params_m=count_params(model) / 1e6)


def _count_modes_flops(model: nn.Module, x: torch.Tensor, modes: Sequence[Mode],
                       amp: Optional[str], res: Dict[str, Any]) -> Dict[bool, dict]:
    """Counted FLOPs of a forward and, when a mode trains, of a training step (keyed by
    ``train``); their totals are added to ``res``."""
    flops = {False: _step_flops(model, x, False, amp)}
    res['forward_gflops'] = flops[False]['total'] / 1e9
    res['forward_gmacs'] = flops[False]['total'] / 2e9
    res['attention_gflops'] = flops[False]['attention'] / 1e9
    if any(m.train for m in modes):
        flops[True] = _step_flops(model, x, True, amp)
        res['train_gflops'] = flops[True]['total'] / 1e9
    return flops


def _add_peaks(res: Dict[str, Any], device: str, modes: Sequence[Mode],
               peaks: Optional[Dict[str, Any]], shapes, reps: int) -> None:
    """The peak GEMM rates of the modes' precisions: from ``peaks`` where it has them,
    measured otherwise."""
    res.update(peaks or {})
    missing = [p for p in mode_precisions(modes) if f'peak_{p}_gflops_per_s' not in res]
    if missing:
        res.update(measure_peaks(device, missing, shapes, reps))
    if measure.is_cuda(device):
        # what the model itself runs with (torch defaults: matmul no TF32, cuDNN conv TF32)
        res['model_tf32'] = dict(matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                                 cudnn=bool(torch.backends.cudnn.allow_tf32))


def _time_modes(model: nn.Module, x: torch.Tensor, modes: Sequence[Mode],
                flops: Dict[bool, dict], res: Dict[str, Any]) -> None:
    """Time every mode into ``res['modes']`` (and ``<mode>_ms_median``)."""
    res['modes'] = {}
    for mode in modes:
        times = measure.time_step(model, x, mode.train, res['warmup'], res['iters'], mode.amp)
        res['modes'][mode.name] = _mode_result(
            mode, times, flops[mode.train]['total'] / 1e9, res['batch'],
            res[f'peak_{mode.peak_precision}_gflops_per_s'])
        res[f'{mode.key}_ms_median'] = res['modes'][mode.name]['ms_median']


def _add_summary_fields(res: Dict[str, Any]) -> None:
    """The top-level fields of earlier versions, from the ``forward`` and ``train`` modes."""
    fwd, train = res['modes'].get('forward'), res['modes'].get('train')
    if fwd is not None:
        res.update(forward_ms_mean=fwd['ms_mean'], forward_ms_min=fwd['ms_min'],
                   images_per_s=fwd['images_per_s'],
                   achieved_gflops_per_s=fwd['achieved_gflops_per_s'],
                   efficiency_pct=fwd['efficiency_pct'])
    if train is not None:
        res.update(fwd_bwd_ms_median=train['ms_median'], fwd_bwd_ms_mean=train['ms_mean'])


def run_benchmark(spec: Dict[str, Any], modes: Optional[Sequence[Mode]] = None,
                  warmup: int = 2, iters: int = 10, memory: bool = True,
                  peaks: Optional[Dict[str, Any]] = None,
                  gemm_shapes: Optional[Sequence[Sequence[int]]] = None,
                  gemm_reps: int = 2) -> Dict[str, Any]:
    """All measurements for ``spec``.

    Args:
        spec: from :func:`make_spec`.
        modes: what to time (default: :data:`DEFAULT_MODES` at the spec's ``amp``).
        warmup: untimed steps per mode.
        iters: timed steps per mode.
        memory: also measure the peak memory of one step per mode.
        peaks: a :func:`measure_peaks` result to reuse; precisions it lacks are measured.
        gemm_shapes: GEMM shapes of the peak rates measured here (default
            :data:`measure.GEMM_SHAPES`).
        gemm_reps: timed calls per GEMM shape.

    Returns:
        a flat dict (model, input, FLOPs, ``peak_<precision>_gflops_per_s``, ...) with
        ``modes`` (mode name -> ``ms_median``, ``ms_mean``, ``ms_min``, ``images_per_s``,
        ``gflops``, ``achieved_gflops_per_s``, ``peak_precision``, ``peak_gflops_per_s``,
        ``efficiency_pct``, and with memory ``peak_mem_gib``, ``peak_abs_gib``,
        ``mem_baseline_gib``, ``mem_lower_bound``) and ``<mode>_ms_median`` for each mode.
        From the ``forward`` mode also ``forward_ms_median/mean/min``, ``images_per_s``,
        ``achieved_gflops_per_s``, ``efficiency_pct``; from ``train``
        ``fwd_bwd_ms_median/mean`` and ``fwd_bwd_peak_mem_gib``, ``fwd_bwd_peak_abs_gib``,
        ``mem_baseline_gib``, ``mem_lower_bound``.
    """
    amp = spec.get('amp')
    modes = list(modes) if modes is not None else parse_modes(DEFAULT_MODES, amp)
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    model = build_for_benchmark(spec)
    x = make_input(spec)
    res = _describe_run(spec, model, x, warmup, iters)
    flops = _count_modes_flops(model, x, modes, amp, res)
    _add_peaks(res, spec['device'], modes, peaks, gemm_shapes, gemm_reps)
    _time_modes(model, x, modes, flops, res)
    _add_summary_fields(res)
    if memory:
        if measure.is_cuda(spec['device']):
            mem = _cuda_peak_memory(model, x, modes)
        else:  # a fresh process measures; this one's model and input are not needed
            del model, x
            gc.collect()
            mem = cpu_peak_memory(spec, modes)
        _add_memory(res, mem)
    return res
