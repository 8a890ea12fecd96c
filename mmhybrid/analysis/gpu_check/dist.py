"""Section ``dist``: the quick start trained through ``tools/dist_train.sh CONFIG 1`` (NCCL on a
GPU, gloo on the CPU): its backend, world size, wall time and bbox mAP."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time
from typing import List, Optional

from .common import GpuCheckOptions, print_row, repo_path

#: the quick start's config, relative to the checkout
QUICKSTART = 'configs/quickstart/retinanet_crossformer_toy.py'


def free_port() -> int:
    """A TCP port free on this machine now (for the rendezvous of ``torchrun``)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def prepare_workspace(options: GpuCheckOptions) -> str:
    """The quick start's folder under ``OUT``, its ``data`` a link to the toy datasets (written
    first where missing): the config reads ``data/toy_coco/`` relative to where it runs."""
    data = osp.abspath(options.data or osp.join(options.out, 'data'))
    if not osp.exists(osp.join(data, 'toy_coco', 'annotations', 'instances_val.json')):
        sizes = ['--train', '16', '--val', '8'] if options.tiny else []
        subprocess.run([sys.executable, repo_path('tools/misc/make_toy_datasets.py'), '--out',
                        data, *sizes], check=True, capture_output=True)
    workspace = osp.abspath(osp.join(options.out, 'quickstart'))
    os.makedirs(workspace, exist_ok=True)
    link = osp.join(workspace, 'data')
    if osp.islink(link):
        os.unlink(link)
    if not osp.exists(link):
        os.symlink(data, link)
    return workspace


def quickstart_options(tiny: bool) -> List[str]:
    """The ``--cfg-options`` of the quick start run: fewer log lines; with ``tiny`` one epoch
    on 16 images."""
    options = ['default_hooks.logger.interval=10']
    if tiny:
        options += ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                    'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=16',
                    'val_dataloader.dataset.indices=8',
                    # 8 steps leave every score below the config's 0.05: keep them, so the
                    # metric runs
                    'model.test_cfg.score_thr=0.0']
    return options


def last_bbox_map(log: str) -> Optional[float]:
    """The last ``coco/bbox_mAP`` a training log printed (its validation line), or None."""
    found = re.findall(r'coco/bbox_mAP: (-?\d+(?:\.\d+)?)', log)
    return float(found[-1]) if found else None


def check_dist(options: GpuCheckOptions) -> List[dict]:
    """The ``dist`` section: one row (its log written to ``OUT/dist_train.log``)."""
    workspace = prepare_workspace(options)
    cfg_options = quickstart_options(options.tiny)
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    cmd = ['bash', repo_path('tools/dist_train.sh'), repo_path(QUICKSTART), '1',
           '--work-dir', osp.join(workspace, 'work_dir'), '--cfg-options', *cfg_options]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True)
    row = dict(command=' '.join(['tools/dist_train.sh', QUICKSTART, '1', '--cfg-options',
                                 *cfg_options]), minutes=(time.time() - t0) / 60)
    out = proc.stdout + proc.stderr
    with open(osp.join(options.out, 'dist_train.log'), 'w') as f:
        f.write(out)
    if proc.returncode:
        last = out.strip().splitlines()[-1][:300] if out.strip() else ''
        row['error'] = f'dist_train.sh exited {proc.returncode}: {last}'
        return [row]
    backend = re.findall(r"'backend': '(\w+)'", out)
    row['backend'] = 'gloo' if "replaced by 'gloo'" in out else (backend[-1] if backend else 'unknown')
    world = re.search(r'GPU number: (\d+)', out)
    row['world_size'] = int(world.group(1)) if world else None
    row['bbox_mAP'] = last_bbox_map(out)
    if row['bbox_mAP'] is None:
        row['error'] = 'the training log has no coco/bbox_mAP (no validation ran)'
    print_row('dist', row)
    return [row]
