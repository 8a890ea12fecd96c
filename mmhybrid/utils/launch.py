"""Distributed launch on machines without CUDA (shared by tools/train.py and tools/test.py)."""
import datetime
import logging
import os

import torch
from mmengine.config import ConfigDict
from mmengine.logging import print_log

from .config import config_dicts


class LauncherError(RuntimeError):
    """A launcher that cannot work on this machine."""


def replace_sync_bn(cfg_node) -> int:
    """Turn every ``SyncBN`` norm config under ``cfg_node`` into ``BN``, in place.

    SyncBatchNorm needs CUDA tensors; on a CPU (gloo) run each process keeps its own
    batch statistics instead. Returns how many were replaced.
    """
    count = 0
    for node in config_dicts(cfg_node):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
    return count


def setup_distributed_without_cuda(cfg, launcher: str) -> None:
    """Make a distributed run work on a machine without CUDA.

    mmdet and mmseg configs ask for the ``nccl`` backend, and mmengine's
    ``init_dist`` and DDP wrapping assume one GPU per process. Without CUDA this
    switches ``cfg.env_cfg.dist_cfg.backend`` to ``gloo``, starts the process
    group itself (the Runner then skips ``init_dist``, which would call
    ``torch.cuda.set_device``), wraps the model in DDP without ``device_ids`` and
    replaces SyncBN (CUDA only) with BN. With CUDA, or without a launcher, it does
    nothing.

    Args:
        cfg (mmengine.Config): The config; changed in place.
        launcher (str): The ``--launcher`` value.

    Raises:
        LauncherError: for slurm/mpi launchers without CUDA.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise LauncherError(f'--launcher {launcher} needs CUDA GPUs; on a machine without them '
                            'use tools/dist_train.sh / tools/dist_test.sh (torchrun, gloo backend)')
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend') != 'gloo':
        if os.environ.get('RANK', '0') == '0':
            print_log(f'CUDA is not available: distributed backend {dist_cfg.get("backend")!r} '
                      "replaced by 'gloo'", logger='current', level=logging.WARNING)
        dist_cfg.backend = 'gloo'
    if replace_sync_bn(cfg.model) and os.environ.get('RANK', '0') == '0':
        print_log('CUDA is not available: SyncBN replaced by BN (per-process statistics)',
                  logger='current', level=logging.WARNING)
    timeout = dist_cfg.get('timeout')
    torch.distributed.init_process_group(
        backend='gloo', timeout=None if timeout is None else datetime.timedelta(seconds=timeout))
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def finish_distributed() -> None:
    """Wait for every rank, then release the process group before the interpreter exits.

    A rank that tears down its gloo group while another is still sending makes the
    C++ side abort ("terminate called without an active exception"), and a live
    group at interpreter exit does the same; a barrier first avoids both.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
