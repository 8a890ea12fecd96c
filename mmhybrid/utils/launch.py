"""Distributed launch on machines without CUDA (shared by tools/train.py and tools/test.py)."""
import datetime
import logging
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
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


def slurm_environment() -> None:
    """Set the ``torch.distributed`` environment of a Slurm task from its ``SLURM_*`` variables, by
    mmengine's rules (``mmengine.dist.utils._init_dist_slurm``), for machines without CUDA.

    ``RANK`` = ``SLURM_PROCID``, ``WORLD_SIZE`` = ``SLURM_NTASKS``, ``LOCAL_RANK`` =
    ``SLURM_LOCALID``; ``MASTER_ADDR`` (unless set) the first host of ``SLURM_NODELIST`` as
    ``scontrol show hostname`` expands it; ``MASTER_PORT`` (unless set) 29500.

    Raises:
        LauncherError: outside a Slurm task, or when the first host cannot be found.
    """
    names = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise LauncherError(f'--launcher slurm needs the variables srun sets ({", ".join(missing)} missing): '
                            'start it with srun (tools/slurm_train.sh), or use tools/dist_train.sh')
    proc_id = int(os.environ['SLURM_PROCID'])
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        found = subprocess.run(['scontrol', 'show', 'hostname', nodes], capture_output=True, text=True) \
            if shutil.which('scontrol') else None
        hosts = found.stdout.split() if found is not None and found.returncode == 0 else []
        if not hosts:
            raise LauncherError(f'--launcher slurm: `scontrol show hostname {nodes}` gave no host; '
                                'set MASTER_ADDR to the first node of the job')
        os.environ['MASTER_ADDR'] = hosts[0]
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _warn_once(message: str) -> None:
    if os.environ.get('RANK', '0') == '0':
        print_log(message, logger='current', level=logging.WARNING)


def setup_distributed_without_cuda(cfg, launcher: str) -> None:
    """Make a distributed run work on a machine without CUDA.

    mmdet and mmseg configs ask for the ``nccl`` backend, and mmengine's
    ``init_dist`` and DDP wrapping assume one GPU per process. Without CUDA this
    switches ``cfg.env_cfg.dist_cfg.backend`` to ``gloo``, starts the process
    group itself (the Runner then skips ``init_dist``, which would call
    ``torch.cuda.set_device``; a Slurm task's environment comes from
    :func:`slurm_environment`), wraps the model in DDP without ``device_ids``
    (``find_unused_parameters`` from the config, default False, as mmengine) and
    replaces SyncBN (``norm_cfg``) and ``sync_bn`` (CUDA only) with per-process
    BatchNorm, saying so in one line. With CUDA, or without a launcher, it does nothing.

    Args:
        cfg (mmengine.Config): The config; changed in place.
        launcher (str): The ``--launcher`` value.

    Raises:
        LauncherError: for the mpi launcher without CUDA, or a Slurm launch without srun's variables.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher not in ('pytorch', 'slurm'):
        raise LauncherError(f'--launcher {launcher} needs CUDA GPUs; on a machine without them '
                            'use tools/dist_train.sh / tools/dist_test.sh (torchrun, gloo backend)')
    if launcher == 'slurm':
        slurm_environment()
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend') != 'gloo':
        _warn_once(f'CUDA is not available: distributed backend {dist_cfg.get("backend")!r} replaced by \'gloo\'')
        dist_cfg.backend = 'gloo'
    if replace_sync_bn(cfg.model):
        _warn_once('CUDA is not available: SyncBN replaced by BN (per-process statistics)')
    if cfg.get('sync_bn'):
        _warn_once(f'sync_bn={cfg.sync_bn!r} ignored: SyncBatchNorm needs CUDA GPUs (NCCL), so on CPU (gloo) '
                   'every BatchNorm keeps per-process statistics')
        cfg.sync_bn = None
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


#: what DistributedDataParallel (find_unused_parameters=False) raises at the iteration after one in
#: which a trainable parameter got no gradient
DDP_UNUSED_PARAMETERS = 'Expected to have finished reduction in the prior iteration'


def compact_names(names: Sequence[str]) -> str:
    """``a.b.weight, a.b.bias`` -> ``a.b.{weight,bias}``: parameter names grouped by module."""
    modules: Dict[str, List[str]] = {}
    for name in names:
        module, _, leaf = name.rpartition('.')
        modules.setdefault(module, []).append(leaf)
    return ', '.join(f'{m}.{{{",".join(leaves)}}}' if len(leaves) > 1 else f'{m}.{leaves[0]}'
                     for m, leaves in modules.items())


def _reducer_parameter_names(ddp: nn.Module) -> List[str]:
    """The names of the parameters DDP synchronises, in the order of its reducer's indices
    (``DistributedDataParallel._build_params_for_reducer``: trainable, module by module, shared ones once)."""
    ignored, seen, names = getattr(ddp, 'parameters_to_ignore', set()), set(), []
    for module_name, module in ddp.module.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            name = f'{module_name}.{param_name}' if module_name else param_name
            if param.requires_grad and name not in ignored and id(param) not in seen:
                seen.add(id(param))
                names.append(name)
    return names


def unused_parameters_message(model: nn.Module, error: BaseException) -> Optional[str]:
    """One line for DDP's unused-parameter error, naming the parameters; None for other errors.

    Args:
        model: the DistributedDataParallel-wrapped model that raised ``error``.
        error: what the training step raised.
    """
    text = str(error)
    if DDP_UNUSED_PARAMETERS not in text:
        return None
    found = re.search(r'indices which did not receive grad for rank \d+: ([\d ]+)', text)
    names = _reducer_parameter_names(model) if hasattr(model, 'module') else []
    indices = [int(i) for i in found.group(1).split()] if found else []
    which = compact_names([names[i] for i in indices if i < len(names)]) if names and indices else \
        'see the indices above'
    return (f'under DistributedDataParallel with find_unused_parameters=False, {len(indices) or "some"} trainable '
            f'parameters got no gradient in the previous iteration: {which}. Make the model use them (e.g. '
            'out_indices that the neck reads), freeze them, or set find_unused_parameters=True (slower); '
            'tools/misc/preflight.py CONFIG finds them before a job')
