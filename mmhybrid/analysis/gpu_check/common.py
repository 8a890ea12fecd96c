"""What every section of the GPU check shares: its options, its targets, the checkout it runs
from and how a failure is written down."""
import json
import os.path as osp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from .. import measure

#: the checkout the check runs from: the configs, ``tools/dist_train.sh`` and the toy datasets'
#: script are files of the repository, not of the package
ROOT = str(Path(__file__).resolve().parents[3])
#: the sections, in the order they run
SECTIONS = ('ops', 'backbones', 'detectors', 'dist')


@dataclass
class Targets:
    """The issue's targets for the backbones, reported as met or MISSED (a missed target is not
    a failure of the check).

    Args:
        bf16_speedup: our bf16 training step at least this many times as fast as the official
            implementation's fp32 one (throughput ratio).
        memory_ratio: our peak memory of a training step (fp32 and bf16) at most this many times
            the official implementation's.
        peer_ms_per_gflop: our bf16 ms per forward GFLOP at most this many times the timm peer's
            (the peer of equal FLOPs: Swin-T, ConvNeXt-T).
    """
    bf16_speedup: float = 1.3
    memory_ratio: float = 1.0
    peer_ms_per_gflop: float = 1.2


@dataclass
class GpuCheckOptions:
    """How the check runs.

    Args:
        device: ``'cuda'``, ``'cuda:N'`` or ``'cpu'``.
        tiny: toy sizes (the CPU mode the test suite runs): every path runs, nothing is measured
            at the targets' sizes.
        out: folder for ``summary.md``, ``results.json`` and the quick start's files.
        sections: which of :data:`SECTIONS` to run.
        official: folder of the side-by-side ``bench.py`` (with ``official/``) whose official
            implementations the backbones are compared with, or None.
        data: folder holding ``toy_coco/`` for the quick start (written there if missing);
            default ``OUT/data``.
        warmup: untimed steps; default 3, with ``tiny`` 0.
        iters: timed steps; default 10, with ``tiny`` 1.
        threads: ``torch.set_num_threads``, or None for torch's choice.
        targets: the backbone targets of the summary.
    """
    device: str = 'cuda'
    tiny: bool = False
    out: str = 'work_dirs/gpu_check'
    sections: Sequence[str] = SECTIONS
    official: Optional[str] = None
    data: Optional[str] = None
    warmup: Optional[int] = None
    iters: Optional[int] = None
    threads: Optional[int] = None
    targets: Targets = field(default_factory=Targets)

    def __post_init__(self):
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f'unknown sections {unknown}; choose from {",".join(SECTIONS)}')
        if self.warmup is None:
            self.warmup = 0 if self.tiny else 3
        if self.iters is None:
            self.iters = 1 if self.tiny else 10

    @property
    def batch(self) -> int:
        """Images per backbone step: 2 (1 with ``tiny``)."""
        return 1 if self.tiny else 2


def error_text(err: BaseException) -> str:
    """One line naming an exception: its type and the first line of its message (300 chars)."""
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0][:300] if text else ""}'


def free_memory(device) -> None:
    """Collect garbage, return freed heap pages to the OS and, on CUDA, the allocator's cache,
    so that one model's memory does not stay behind when the next one is measured."""
    measure.release_free_memory()
    if measure.is_cuda(device):
        torch.cuda.empty_cache()


def print_row(section: str, row: dict) -> None:
    """Print a measured row as ``[section] {json}`` (without its traceback), as it comes."""
    print(f'[{section}] {json.dumps({k: v for k, v in row.items() if k != "traceback"})}', flush=True)


def repo_path(*parts: str) -> str:
    """A path inside the checkout (:data:`ROOT`)."""
    return osp.join(ROOT, *parts)
