"""End-to-end quick start on the toy data: short training, 2-process training, kill and resume (with --amp).

Every run goes through tools/train.py / tools/test.py / tools/dist_train.sh in a
subprocess, from a scratch folder that holds a small toy dataset under data/, so
the quick-start configs' relative data roots resolve as they do for a user.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmhybrid.checkpoints import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'configs/quickstart/retinanet_crossformer_toy.py')
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('quickstart')
    subprocess.run([sys.executable, str(ROOT / 'tools/misc/make_toy_datasets.py'), '--out', str(ws / 'data'),
                    '--train', '96', '--val', '24'], check=True, capture_output=True)
    return ws


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    return env


def _run(ws, args, timeout=300, **kw):
    proc = subprocess.run(args, cwd=ws, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _scalars(work_dir: Path):
    log = sorted(work_dir.glob('*/vis_data/scalars.json'), key=os.path.getmtime)[-1]
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_short_training_lowers_the_loss_and_gives_a_positive_map(workspace):
    work_dir = workspace / 'short'
    _run(workspace, [sys.executable, str(ROOT / 'tools/train.py'), CONFIG, '--work-dir', str(work_dir),
                     '--cfg-options', 'train_cfg.max_epochs=6', 'train_cfg.val_interval=6',
                     'default_hooks.logger.interval=4', 'param_scheduler.0.end=20'])
    records = _scalars(work_dir)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert records[-1]['coco/bbox_mAP'] > 0.0


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_train_with_the_same_total_batch_as_one(workspace):
    """2 x 2 images per step = the config's 1 x 4: same iteration count, same images per step."""
    work_dir = workspace / 'dist'
    env = dict(_env(), PORT=str(_free_port()), PYTHON=sys.executable)
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), CONFIG, '2', '--work-dir', str(work_dir),
                           '--cfg-options', 'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
                           'train_cfg.val_interval=1', 'default_hooks.logger.interval=4'],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "replaced by 'gloo'" in out and 'GPU number: 2' in out   # mmengine's words for world size
    assert re.search(r'Epoch\(train\) \[1\]\[24/24\]', out)   # 96 images / (2 x 2) = 24 steps
    assert 'Epoch(val) [1]' in out   # evaluated once, across both processes
    assert (work_dir / 'epoch_1.pth').exists()


def test_killed_amp_training_resumes_from_its_last_checkpoint_and_tests(workspace):
    """``--amp`` (bf16 autocast on the CPU, no loss scaling) killed mid-run, resumed, then tested."""
    work_dir = workspace / 'resume'
    cmd = [sys.executable, str(ROOT / 'tools/train.py'), CONFIG, '--amp', '--work-dir', str(work_dir), '--cfg-options',
           'train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.max_keep_ckpts=5']
    proc = subprocess.Popen(cmd, cwd=workspace, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (work_dir / 'epoch_1.pth').exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)    # let the checkpoint finish writing, then kill mid-epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work_dir / 'epoch_1.pth').exists() and not (work_dir / 'epoch_2.pth').exists()

    checkpoint = load_checkpoint_file(str(work_dir / 'epoch_1.pth'))
    assert checkpoint['optimizer']['state'] and 'loss_scaler' not in checkpoint['optimizer']

    out = _run(workspace, cmd + ['--resume'])
    assert 'mixed precision on cpu in bfloat16 (no loss scaling)' in out and 'loss: nan' not in out
    assert re.search(r'resumed epoch: 1, iter: \d+', out)
    assert (work_dir / 'epoch_2.pth').exists()
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert checkpoint.endswith('epoch_2.pth')

    tested = _run(workspace, [sys.executable, str(ROOT / 'tools/test.py'), CONFIG, checkpoint,
                              '--work-dir', str(workspace / 'test')])
    trained_map = _scalars(work_dir)[-1]['coco/bbox_mAP']
    assert f'coco/bbox_mAP: {trained_map:.4f}' in tested


@pytest.mark.parametrize('config,metric', [
    ('mask_rcnn_crossformer_toy.py', 'coco/segm_mAP'),
    ('upernet_crossformer_toy.py', 'mIoU'),
])
def test_mask_rcnn_and_upernet_quickstarts_train_and_evaluate(workspace, config, metric):
    work_dir = workspace / config.split('_')[0]
    # a few steps each (Mask R-CNN: one epoch over the first 24 training images), then the evaluation
    short = (['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.dataset.indices=24']
             if 'mask_rcnn' in config else ['train_cfg.max_iters=8', 'train_cfg.val_interval=8'])
    short.append('val_dataloader.dataset.indices=8')   # the metric of 8 validation images
    out = _run(workspace, [sys.executable, str(ROOT / 'tools/train.py'), str(ROOT / 'configs/quickstart' / config),
                           '--work-dir', str(work_dir), '--cfg-options', 'default_hooks.logger.interval=4', *short])
    assert re.search(metric + r': \d', out), out[-2000:]
