"""The whole check: the sections in order, then ``summary.md`` and ``results.json``."""
import json
import os
import os.path as osp
import sys
import traceback
from typing import Dict, List

import torch

from ..measure import is_cuda
from .backbones import check_backbones
from .common import SECTIONS, GpuCheckOptions, error_text
from .detectors import check_detectors
from .dist import check_dist
from .mmcv_ops import check_ops
from .summary import environment, failed, summary

#: section name -> the function that runs it
CHECKS = dict(ops=check_ops, backbones=check_backbones, detectors=check_detectors, dist=check_dist)


def _notes(options: GpuCheckOptions) -> List[str]:
    """What the summary says about how the check ran."""
    notes = []
    if options.tiny:
        notes.append('--tiny: toy sizes on purpose; the figures show that every path runs, '
                     'they do not measure the targets')
    if 'backbones' in options.sections and not options.official:
        notes.append('official implementations not compared: pass --official DIR (the folder of '
                     'the side-by-side bench.py, e.g. ../shared/bench)')
        print('gpu_check: ' + notes[-1], flush=True)
    return notes


def run_sections(options: GpuCheckOptions) -> Dict[str, List[dict]]:
    """Run the sections of ``options.sections`` in :data:`SECTIONS` order: section -> its rows. A
    section that raises gives one row with its error; the others still run."""
    results = {}
    for section in SECTIONS:
        if section not in options.sections:
            continue
        try:
            results[section] = CHECKS[section](options)
        except Exception as err:  # noqa: BLE001  (one broken section does not hide the others)
            results[section] = [dict(model=section, error=error_text(err),
                                     traceback=traceback.format_exc())]
            print(f'[{section}] FAILED: {error_text(err)}', flush=True)
    return results


def run_gpu_check(options: GpuCheckOptions) -> int:
    """Run the check and write ``OUT/summary.md`` and ``OUT/results.json``.

    Args:
        options: how it runs.

    Returns:
        the exit status: 1 when an op disagrees with its reference or a step fails, 0 otherwise
        (targets missed are reported, not failures); 0 with a message, and nothing written, for
        a CUDA device on a machine without CUDA.
    """
    if is_cuda(options.device) and not torch.cuda.is_available():
        print(f'gpu_check: skipped: no CUDA device here (torch {torch.__version__}, built for CUDA '
              f'{torch.version.cuda}). Run it on a GPU machine, or with --device cpu --tiny for '
              'the CPU mode.')
        return 0
    if options.threads:
        torch.set_num_threads(options.threads)
    if is_cuda(options.device):
        torch.backends.cudnn.benchmark = True
    os.makedirs(options.out, exist_ok=True)
    env = environment(options.device, options.tiny)
    print(f'[env] {json.dumps(env)}', flush=True)
    notes = _notes(options)
    results = run_sections(options)
    text = summary(env, results, notes, options.targets)
    with open(osp.join(options.out, 'summary.md'), 'w') as f:
        f.write(text)
    with open(osp.join(options.out, 'results.json'), 'w') as f:
        json.dump(dict(env=env, notes=notes, results=results), f, indent=1)
    print('\n' + text)
    bad = failed(results)
    if bad:
        print('gpu_check: FAILED: ' + '; '.join(bad), file=sys.stderr)
        return 1
    print(f'gpu_check: all checks passed ({osp.join(options.out, "summary.md")})')
    return 0
