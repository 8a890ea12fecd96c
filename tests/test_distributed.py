"""Cluster launches of shipped configs, for real: DDP with two processes (gloo on CPU) through
tools/dist_train.sh, multi-node torchrun, tools/slurm_train.sh under a stand-in srun.

Each run trains a root config of one head type (RetinaNet, Mask R-CNN, Cascade Mask R-CNN,
UperNet, Semantic FPN) as a user would, with two changes written into a dumped copy: the
family's small test arch (every other backbone option as the config says; the preflight's
``tiny_config``) and the toy data of ``tools/misc/make_toy_datasets.py`` for 2 iterations.
DDP wraps the model as mmengine does, with ``find_unused_parameters=False``. A probe hook
(tests/data/tools/mmhybrid_ddp_probe.py) saves every rank's parameters after training, so the
tests see that DDP synchronised them.
"""
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmhybrid.analysis.preflight import tiny_config
from mmhybrid.checkpoints import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / 'tools'
PROBE_DIR = Path(__file__).resolve().parent / 'data' / 'tools'
pytestmark = pytest.mark.slow

#: one root config per head type
HEAD_CONFIGS = {
    'retinanet': 'retinanet_crossformer_s_coco.py',
    'mask_rcnn': 'mask_rcnn_crossformer_s_coco.py',
    'cascade_mask_rcnn': 'cascade_mask_rcnn_crossformer_s_coco.py',
    'upernet': 'upernet_crossformer_s_ade20k.py',
    'semantic_fpn': 'fpn_crossformer_s_ade20k.py',
}
TOY_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
FIXTURE = Path(__file__).resolve().parent / 'data' / 'configs' / 'retinanet_conv2former_t_coco_unused_out_norm.py'


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('distributed')
    subprocess.run([sys.executable, str(TOOLS / 'misc/make_toy_datasets.py'), '--out', str(ws / 'data'),
                    '--train', '16', '--val', '4'], check=True, capture_output=True)
    return ws


def _det_data(with_mask: bool) -> dict:
    """The toy COCO-layout training set, 160 px, at 2 images per process."""
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
                dict(type='Resize', scale=(160, 160), keep_ratio=True),
                dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
    return dict(_delete_=True, batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=dict(type='CocoDataset', data_root='data/toy_coco/', metainfo=dict(classes=TOY_CLASSES),
                             ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                             filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=pipeline))


def _seg_data() -> dict:
    """The toy ADE20K-layout training set, 160 px crops, at 2 images per process."""
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='RandomCrop', crop_size=(160, 160)), dict(type='RandomFlip', prob=0.5),
                dict(type='PackSegInputs')]
    return dict(_delete_=True, batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=dict(type='BaseSegDataset', data_root='data/toy_ade/ADEChallengeData2016',
                             data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                             img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True, pipeline=pipeline))


def toy_config(config: Path, ws: Path, name: str, max_iters: int = 2) -> Path:
    """``config`` with its family's test arch and the toy data, iteration-based for
    ``max_iters``, a checkpoint at the end, no validation, and the probe hook; dumped into ``ws``."""
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None
    cfg = tiny_config(cfg)
    seg = cfg.default_scope == 'mmseg'
    cfg.merge_from_dict(dict(
        train_dataloader=_seg_data() if seg else _det_data(bool(cfg.model.get('roi_head', {}).get('mask_head'))),
        train_cfg=dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10 ** 6),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=10)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
                           logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        custom_hooks=[dict(type='SaveRankParamsHook')],
        custom_imports=dict(imports=['mmhybrid', 'mmhybrid_ddp_probe'], allow_failed_imports=False)))
    if seg:
        cfg.model.data_preprocessor.size = (160, 160)
    for key in ('val_dataloader', 'val_evaluator', 'val_cfg', 'test_dataloader', 'test_evaluator', 'test_cfg'):
        cfg[key] = None
    path = ws / f'{name}.py'
    cfg.dump(str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(PROBE_DIR), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    env.pop('CUDA_VISIBLE_DEVICES', None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(args, ws, timeout=300, check=True, **env):
    proc = subprocess.run([str(a) for a in args], cwd=ws, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, out[-4000:]
    return proc.returncode, out


def _rank_params(work_dir: Path, world_size: int) -> list:
    files = [work_dir / f'params_rank{r}.pt' for r in range(world_size)]
    assert all(f.exists() for f in files), sorted(p.name for p in work_dir.iterdir())
    return [torch.load(f, weights_only=True) for f in files]


def assert_synchronised(work_dir: Path, world_size: int = 2) -> None:
    """Every rank ran under DDP in a world of ``world_size`` and ends with the same parameters,
    which training moved away from the first rank's initial ones."""
    saved = _rank_params(work_dir, world_size)
    assert {s['world_size'] for s in saved} == {world_size}
    assert {s['wrapper'] for s in saved} == {'MMDistributedDataParallel'}
    first = saved[0]['params']
    for other in saved[1:]:
        assert other['params'].keys() == first.keys()
        differ = [k for k in first if not torch.equal(first[k], other['params'][k])]
        assert not differ, f'parameters differ between ranks: {differ[:5]}'


@pytest.mark.parametrize('head', list(HEAD_CONFIGS))
def test_two_process_ddp_synchronises_and_resumes_on_one_process(workspace, head):
    """tools/dist_train.sh CONFIG 2 (gloo, find_unused_parameters=False, sync_bn=torch dropped on CPU):
    2 iterations, both ranks end with the same parameters; then tools/train.py --resume on 1 process continues the iteration count
    and the optimizer state."""
    config = toy_config(ROOT / 'configs' / HEAD_CONFIGS[head], workspace, head)
    work_dir = workspace / f'work_{head}'
    # sync_bn=torch as a GPU user would ask for it: on CPU (gloo) it is dropped, in one line
    _, out = _run(['bash', TOOLS / 'dist_train.sh', config, 2, '--work-dir', work_dir, '--cfg-options', 'sync_bn=torch'],
                  workspace, PORT=_free_port())
    assert "replaced by 'gloo'" in out and 'Iter(train) [2/2]' in out
    assert "sync_bn='torch' ignored: SyncBatchNorm needs CUDA GPUs" in out
    assert_synchronised(work_dir)
    before = load_checkpoint_file(str(work_dir / 'iter_2.pth'))
    assert before['meta']['iter'] == 2

    _, out = _run([sys.executable, TOOLS / 'train.py', config, '--work-dir', work_dir, '--resume',
                   '--cfg-options', 'train_cfg.max_iters=3'], workspace)
    assert re.search(r'resumed epoch: \d+, iter: 2', out), out[-3000:]
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/' not in out
    after = load_checkpoint_file(str(work_dir / 'iter_3.pth'))
    assert after['meta']['iter'] == 3
    steps = {float(s['step']) for s in after['optimizer']['state'].values()}
    assert steps == {3.0}, steps   # AdamW's step count went on from the 2 DDP steps
    saved = torch.load(work_dir / 'params_rank0.pt', weights_only=True)
    assert saved['world_size'] == 1 and saved['iter'] == 3


def test_ddp_stops_at_iteration_2_on_a_parameter_without_gradient(workspace):
    """What the gradient contract guards against: the Conv2Former RetinaNet as shipped before its fix
    (an output norm the FPN never reads) under DDP with find_unused_parameters=False."""
    config = toy_config(FIXTURE, workspace, 'unused_out_norm')
    code, out = _run(['bash', TOOLS / 'dist_train.sh', config, 2, '--work-dir', workspace / 'work_unused'],
                     workspace, check=False, PORT=_free_port())
    assert code != 0
    # DDP's error, turned by tools/train.py into one line that names the parameters
    assert 'train.py: error: under DistributedDataParallel with find_unused_parameters=False, 2 trainable ' \
        'parameters got no gradient in the previous iteration: backbone.out_norms.0.{weight,bias}.' in out, out[-3000:]


def test_two_nodes_of_one_process_form_one_job(workspace):
    """NNODES=2 NODE_RANK=0|1 MASTER_ADDR=127.0.0.1 tools/dist_train.sh CONFIG 1, started twice: one job of
    world size 2 whose two processes end with the same parameters."""
    config = toy_config(ROOT / 'configs' / HEAD_CONFIGS['retinanet'], workspace, 'two_nodes')
    work_dir, port = workspace / 'work_two_nodes', _free_port()
    nodes = [subprocess.Popen(['bash', str(TOOLS / 'dist_train.sh'), str(config), '1', '--work-dir', str(work_dir)],
                              cwd=workspace, env=_env(NNODES=2, NODE_RANK=rank, MASTER_ADDR='127.0.0.1', PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert 'Iter(train) [2/2]' in outs[0]
    assert_synchronised(work_dir)


STAND_IN_SRUN = '''#!{python}
"""A stand-in for srun on one machine: starts --ntasks copies of the command with the SLURM_* variables
a real srun gives each task, and fails if one fails."""
import os, subprocess, sys
args = sys.argv[1:]
ntasks, i = 1, 0
while args and args[0].startswith('-'):
    opt = args.pop(0)
    if opt.startswith('--ntasks='):
        ntasks = int(opt.split('=', 1)[1])
    elif opt in ('-p', '-n', '--ntasks', '-J'):
        value = args.pop(0)
        ntasks = int(value) if opt in ('-n', '--ntasks') else ntasks
common = dict(SLURM_NTASKS=str(ntasks), SLURM_NPROCS=str(ntasks), SLURM_NODELIST='localhost',
              SLURM_JOB_NODELIST='localhost', SLURM_NNODES='1', SLURM_NODEID='0', SLURM_JOB_ID='4242',
              SLURM_STEP_NUM_TASKS=str(ntasks), SLURM_TASKS_PER_NODE=str(ntasks))
tasks = [subprocess.Popen(args, env=dict(os.environ, **common, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)))
         for r in range(ntasks)]
sys.exit(max(t.wait() for t in tasks))
'''
STAND_IN_SCONTROL = '''#!/bin/sh
# a stand-in for `scontrol show hostname NODELIST`: one host per line
[ "$1 $2" = "show hostname" ] && echo localhost
'''


def test_slurm_train_sh_under_srun_forms_a_world_of_two(workspace):
    """tools/slurm_train.sh with GPUS=2 under a stand-in srun: mmengine's slurm launch (SLURM_PROCID,
    SLURM_NTASKS, SLURM_NODELIST through scontrol) comes up with world size 2, synchronised."""
    bin_dir = workspace / 'slurm_bin'
    bin_dir.mkdir(exist_ok=True)
    for name, text in (('srun', STAND_IN_SRUN.format(python=sys.executable)), ('scontrol', STAND_IN_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    config = toy_config(ROOT / 'configs' / HEAD_CONFIGS['retinanet'], workspace, 'slurm')
    work_dir = workspace / 'work_slurm'
    _, out = _run(['bash', TOOLS / 'slurm_train.sh', 'cpu', 'mmhybrid-test', config, work_dir], workspace,
                  GPUS=2, GPUS_PER_NODE=2, CPUS_PER_TASK=1, MASTER_PORT=_free_port(),
                  PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    assert 'Iter(train) [2/2]' in out
    assert_synchronised(work_dir)
