"""Timing and memory primitives: one step of a model, timed or measured.

A *step* is either a forward (eval mode, ``torch.inference_mode``) or a training step
without the optimizer (train mode, forward, mean of the floating outputs, backward),
optionally under autocast (``torch.autocast(device_type, dtype)``: 'cpu' or 'cuda').

Timing: ``time.perf_counter`` around each call on CPU; on CUDA, CUDA events recorded
around each call on the current stream, waited for after each call (latency, launch
overhead included). Memory of one step: on CUDA ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats`` minus what is allocated before; on CPU the RSS
high-water mark (``VmHWM``, reset to the current RSS before the step where Linux allows
it, else ``ru_maxrss``) minus the RSS before the step.

The device's peak rate (:func:`peak_gemm_rate`): the best GFLOP/s of several large GEMM
shapes (:data:`GEMM_SHAPES`) in one precision, the denominator of efficiencies.
"""
import contextlib
import ctypes
import gc
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['AMP_DTYPES', 'GEMM_SHAPES', 'GIB', 'PRECISION_DTYPES', 'autocast',
           'cpu_step_memory', 'cuda_step_memory', 'forward_backward', 'gemm_rate', 'is_cuda',
           'make_step', 'peak_gemm_rate', 'time_calls', 'time_step']

GIB = 1024 ** 3
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
#: the precisions a peak rate is measured in, by name: fp32 and the autocast dtypes
PRECISION_DTYPES = dict(fp32=torch.float32, **AMP_DTYPES)


def is_cuda(device) -> bool:
    """Whether ``device`` (a ``torch.device`` or its name) is a CUDA device."""
    return torch.device(device).type == 'cuda'


def autocast(device, amp: Optional[str]):
    """``torch.autocast`` for ``device``'s type with dtype ``AMP_DTYPES[amp]``, or nothing.

    Args:
        device: the device the model runs on.
        amp: None (fp32), 'bf16' or 'fp16'.
    """
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def time_calls(fn: Callable[[], Any], device, warmup: int, iters: int) -> List[float]:
    """Milliseconds per call of ``fn``, after ``warmup`` untimed calls.

    Args:
        fn: the call to time.
        device: its device: CUDA events on CUDA, ``time.perf_counter`` elsewhere.
        warmup: untimed calls first.
        iters: timed calls.
    """
    for _ in range(warmup):
        fn()
    if not is_cuda(device):
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
        return times
    times = []
    with torch.cuda.device(torch.device(device)):
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return times


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


def forward_backward(model: nn.Module, x: torch.Tensor, amp: Optional[str] = None) -> None:
    """One training step without the optimizer: forward, mean of the outputs, backward.

    Args:
        model: the model (its mode is not changed).
        x: the input.
        amp: autocast dtype of the forward, or None.
    """
    with autocast(x.device, amp):
        out = model(x)
    _loss(out).backward()
    del out


def make_step(model: nn.Module, x: torch.Tensor, train: bool,
              amp: Optional[str] = None) -> Callable[[], None]:
    """Put ``model`` in the step's mode and return the step.

    Args:
        model: the model.
        x: the input.
        train: True: train mode, gradients cleared, forward+backward. False: eval mode,
            forward under ``torch.inference_mode``.
        amp: autocast dtype, or None for fp32.
    """
    if train:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            forward_backward(model, x, amp)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast(x.device, amp):
                model(x)
    return step


def time_step(model: nn.Module, x: torch.Tensor, train: bool, warmup: int, iters: int,
              amp: Optional[str] = None) -> List[float]:
    """ms per step (see :func:`make_step`); gradients are cleared afterwards.

    Args:
        model: the model.
        x: the input.
        train: forward+backward in train mode (True) or forward in eval mode (False).
        warmup: untimed steps first.
        iters: timed steps.
        amp: autocast dtype, or None for fp32.
    """
    try:
        return time_calls(make_step(model, x, train, amp), x.device, warmup, iters)
    finally:
        model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------

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


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``),
    so that a step measured after another does not reuse pages the RSS already holds."""
    gc.collect()
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def cpu_step_memory(step: Callable[[], Any]) -> Dict[str, Any]:
    """Peak RSS increase of one call of ``step`` in this process.

    Meant for a fresh process (see ``mmhybrid.analysis.benchmark.cpu_peak_memory``): the
    peak is the RSS high-water mark (VmHWM) reset before the step where Linux allows it,
    else ``ru_maxrss``, which never goes down (``lower_bound`` says when it was not raised).

    Args:
        step: the step (e.g. from :func:`make_step`).

    Returns:
        dict with ``method``, ``baseline_bytes``, ``peak_bytes``, ``increase_bytes``,
        ``lower_bound`` and ``ru_maxrss_bytes``.
    """
    release_free_memory()
    baseline = current_rss_bytes()
    hwm_reset = baseline is not None and reset_peak_rss()
    peak_before = max_rss_bytes()
    if baseline is None:
        baseline = peak_before
    step()
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


def cuda_step_memory(step: Callable[[], Any], device) -> Dict[str, Any]:
    """Peak CUDA memory of one call of ``step`` (after a reset), and its increase over
    what is allocated before it (model, input).

    Args:
        step: the step (e.g. from :func:`make_step`).
        device: its CUDA device.

    Returns:
        dict with ``method``, ``baseline_bytes``, ``peak_bytes``, ``increase_bytes`` and
        ``lower_bound`` (False).
    """
    device = torch.device(device)
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return dict(method='cuda: max_memory_allocated after reset, minus model+input',
                baseline_bytes=baseline, peak_bytes=peak, increase_bytes=peak - baseline,
                lower_bound=False)


# ---------------------------------------------------------------------------------------
# the device's peak GEMM rate
# ---------------------------------------------------------------------------------------

#: GEMM shapes (M, K, N) whose best rate is a device's peak, per device type: square ones
#: and the tall-skinny / long-K ones of a backbone's linear layers. The CPU ones take a
#: couple of seconds per precision on 2 cores (one 4096^3 fp32 GEMM alone takes about 1 s);
#: the CUDA ones are large enough to fill a GPU.
GEMM_SHAPES: Dict[str, Tuple[Tuple[int, int, int], ...]] = {
    'cpu': ((1024, 1024, 1024), (2048, 2048, 2048), (3072, 3072, 3072), (8192, 1024, 1024),
            (1024, 4096, 1024)),
    'cuda': ((4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 4096),
             (4096, 16384, 4096), (65536, 1024, 1024)),
}


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


def gemm_rate(device, shape: Sequence[int], dtype: torch.dtype = torch.float32,
              reps: int = 2) -> float:
    """GFLOP/s of one (M x K) @ (K x N) GEMM (2*M*K*N FLOPs): the fastest of ``reps``
    timed calls after one warm-up. fp32 on CUDA runs with TF32 disabled.

    Args:
        device: where to run.
        shape: ``(M, K, N)``.
        dtype: the matrices' dtype.
        reps: timed calls.
    """
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    ctx = _no_tf32() if is_cuda(device) else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        times = time_calls(lambda: torch.mm(a, b), device, warmup=1, iters=max(1, reps))
    del a, b
    return 2.0 * m * k * n / (min(times) / 1000.0) / 1e9


def peak_gemm_rate(device='cpu', precision: str = 'fp32',
                   shapes: Optional[Sequence[Sequence[int]]] = None,
                   reps: int = 2) -> Dict[str, Any]:
    """The device's peak matrix-multiply rate in one precision: the best GFLOP/s of several
    large GEMM shapes, each the fastest of ``reps`` calls (what efficiencies divide by).

    Args:
        device: where to run.
        precision: ``'fp32'`` (TF32 off on CUDA), ``'bf16'`` or ``'fp16'``.
        shapes: ``(M, K, N)`` shapes; default :data:`GEMM_SHAPES` of the device's type.
        reps: timed calls per shape.

    Returns:
        dict with ``gflops_per_s`` (the best rate) and ``shape`` (``'MxKxN'`` that gave it).
    """
    if precision not in PRECISION_DTYPES:
        raise ValueError(f'unknown precision {precision!r}; choose from '
                         f'{", ".join(PRECISION_DTYPES)}')
    if shapes is None:
        shapes = GEMM_SHAPES['cuda' if is_cuda(device) else 'cpu']
    rates = {tuple(shape): gemm_rate(device, shape, PRECISION_DTYPES[precision], reps)
             for shape in shapes}
    best = max(rates, key=rates.get)
    return dict(gflops_per_s=rates[best], shape='x'.join(map(str, best)))
