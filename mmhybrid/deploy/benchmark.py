"""Latency of an exported model in ONNX Runtime next to the same graph in PyTorch, in one process.

:func:`compare_latency` builds a config's model (random weights: latency does not depend on them),
exports it as ``tools/deployment/export_onnx.py`` does to a temporary file, and times the eager
graph (``torch.inference_mode``, fp32) and the ONNX Runtime session (CPU provider, as many intra-op
threads as torch uses) alternately on the same input. ``tools/deployment/benchmark_onnx.py`` is its
command line.
"""
import os
import statistics
import tempfile
from typing import Dict, Sequence

import torch

from ..analysis.measure import time_calls
from .export import export_onnx

__all__ = ['compare_latency']


def _random_checkpoint(cfg, path: str) -> None:
    from ..analysis.build import build_model_from_config
    cfg = cfg.copy()
    cfg.model.backbone.init_cfg = None
    model = build_model_from_config(cfg)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), path)


def compare_latency(cfg, shape: Sequence[int], warmup: int = 1, iters: int = 5) -> Dict[str, float]:
    """Median milliseconds of one batch-1 inference at ``shape`` in PyTorch (eager, fp32) and in ONNX Runtime.

    Args:
        cfg (mmengine.Config): A detector or segmentor config.
        shape: ``(H, W)``, multiples of the config's size divisor.
        warmup: untimed calls of each first.
        iters: timed calls of each (alternating in rounds, so both see the same machine load).

    Returns:
        dict: ``eager_ms``, ``ort_ms`` and ``speedup`` (eager / ORT).
    """
    import onnxruntime as ort

    from .export import graph_of, load_trained_model
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, onnx_file = os.path.join(folder, 'model.pth'), os.path.join(folder, 'model.onnx')
        _random_checkpoint(cfg, checkpoint)
        export_onnx(cfg, checkpoint, onnx_file, shape=shape)
        graph = graph_of(load_trained_model(cfg, checkpoint))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])
    x = torch.randn(1, 3, *shape)
    feed = {'images': x.numpy()}

    def eager():
        with torch.inference_mode():
            graph(x)

    def onnx():
        session.run(None, feed)

    eager_ms, ort_ms = [], []
    for fn in (eager, onnx):
        time_calls(fn, 'cpu', warmup=warmup, iters=0)
    for _ in range(iters):   # alternate, one call each per round
        eager_ms += time_calls(eager, 'cpu', warmup=0, iters=1)
        ort_ms += time_calls(onnx, 'cpu', warmup=0, iters=1)
    eager_ms, ort_ms = statistics.median(eager_ms), statistics.median(ort_ms)
    return dict(eager_ms=eager_ms, ort_ms=ort_ms, speedup=eager_ms / ort_ms)
