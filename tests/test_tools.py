"""tools/train.py, tools/test.py and the launch scripts, run as users run them.

End-to-end tests train a toy model (tests/data/tools/mmhybrid_tools_toy.py) with
a config shaped like mmdet/mmseg ones, so that a train -> resume -> test cycle
takes seconds on CPU while saving the same kind of checkpoints. Detection and
segmentation configs are used where no model has to run (missing data, option
handling).
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile
from argparse import Namespace

import mmengine
import pytest
import torch
from mmengine.config import Config

from mmhybrid.utils import DatasetNotFoundError, check_dataset_paths

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA_DIR = osp.join(REPO_ROOT, 'tests', 'data', 'tools')
TOY_CONFIG = osp.join(DATA_DIR, 'toy_config.py')
DET_CONFIG = osp.join(DATA_DIR, 'retinanet_coco.py')
SEG_CONFIG = osp.join(DATA_DIR, 'upernet_ade20k.py')
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')


def tool_env(**extra):
    """Environment for a tool subprocess.

    Args:
        **extra (str): Variables to set on top.

    Returns:
        dict: The current environment with the toy module importable and torch's
        default ``weights_only=True`` loading in force.
    """
    env = dict(os.environ)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (DATA_DIR, env.get('PYTHONPATH')) if p)
    env.update(extra)
    return env


def run(cmd, cwd=REPO_ROOT, timeout=120, **env):
    """Run a command and capture its output.

    Args:
        cmd (list[str]): The command.
        cwd (str): Working directory.
        timeout (float): Seconds before the run counts as hung.
        **env (str): Extra environment variables.

    Returns:
        subprocess.CompletedProcess: With ``stdout`` and ``stderr`` as text.
    """
    return subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def run_python(code):
    """Run Python code in a fresh interpreter (fresh torch safe-globals list).

    Args:
        code (str): The code; it prints one JSON document.

    Returns:
        object: The JSON it printed.
    """
    result = run([sys.executable, '-c', code])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_tool(path, name):
    """Import a tool script as a module (for its config-building functions).

    Args:
        path (str): The script.
        name (str): Module name to give it.

    Returns:
        module: The imported script.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_ok(result):
    """Assert a tool run succeeded, showing its output otherwise.

    Args:
        result (subprocess.CompletedProcess): The run.
    """
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope='module')
def toy_work_dir(tmp_path_factory):
    """Work dir of a 4-iteration toy training (checkpoints at 2 and 4)."""
    work_dir = str(tmp_path_factory.mktemp('toy') / 'work_dir')
    assert_ok(run([sys.executable, TRAIN, TOY_CONFIG, '--work-dir', work_dir]))
    return work_dir


def test_train_without_dataset_exits_2_naming_missing_paths_and_how_to_get_coco(
        tmp_path):
    data_root = str(tmp_path / 'no_such_dir') + '/'
    result = run([
        sys.executable, TRAIN, DET_CONFIG, '--work-dir', str(tmp_path / 'wd'),
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}'
    ], cwd=str(tmp_path))
    assert result.returncode == 2
    assert 'Traceback' not in result.stdout + result.stderr
    for path in ('annotations/instances_train2017.json', 'train2017/',
                 'annotations/instances_val2017.json', 'val2017/'):
        assert data_root + path in result.stderr
    # CocoMetric reads its own ann_file, fixed when the config was written
    assert 'data/coco/annotations/instances_val2017.json' in result.stderr
    assert 'cocodataset.org' in result.stderr and 'data/coco/' in result.stderr
    assert '--cfg-options train_dataloader.dataset.data_root=' in result.stderr
    assert not (tmp_path / 'wd').exists()  # stopped before building the Runner


def test_dataset_check_follows_wrappers_and_names_ade20k_download():
    ade = dict(type='ADE20KDataset', data_root='/no/ade',
               data_prefix=dict(img_path='images/training',
                                seg_map_path='annotations/training'))
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='ConcatDataset', datasets=[ade]))),
        test_dataloader=dict(dataset=dict(type='ADE20KDataset', data_root=DATA_DIR,
                                          data_prefix=dict(img_path='')))))
    check_dataset_paths(cfg, ['test_dataloader'])  # present: no error
    with pytest.raises(DatasetNotFoundError) as err:
        check_dataset_paths(cfg)
    message = str(err.value)
    key = 'train_dataloader.dataset.dataset.datasets.0'
    assert f'/no/ade/images/training  (set by {key}.data_prefix.img_path)' in message
    assert f'/no/ade/annotations/training  (set by {key}.data_prefix.seg_map_path)' \
        in message
    assert 'ADEChallengeData2016.zip' in message and 'data/ade/' in message
    assert f'--cfg-options {key}.data_root=' in message


@pytest.mark.slow
def test_train_checkpoint_resume_test_cycle_under_weights_only_loading(
        toy_work_dir, tmp_path):
    resumed = run([
        sys.executable, TRAIN, TOY_CONFIG, '--work-dir', toy_work_dir, '--resume',
        '--cfg-options', 'train_cfg.max_iters=6'
    ])
    assert_ok(resumed)
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    last = osp.join(toy_work_dir, 'iter_6.pth')
    with open(osp.join(toy_work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == last
    # our own file, read back in the test: no allowlist needed here
    assert torch.load(last, weights_only=False)['meta']['iter'] == 6

    out = str(tmp_path / 'predictions.pkl')
    tested = run([sys.executable, TEST, TOY_CONFIG, last, '--work-dir',
                  str(tmp_path / 'test'), '--out', out])
    assert_ok(tested)
    assert 'toy/mae:' in tested.stdout + tested.stderr
    assert len(mmengine.load(out)) == 8  # one prediction per test sample


@pytest.mark.slow
def test_train_resumes_from_an_explicit_checkpoint_path(toy_work_dir, tmp_path):
    resumed = run([
        sys.executable, TRAIN, TOY_CONFIG, '--work-dir', str(tmp_path / 'wd'),
        '--resume', osp.join(toy_work_dir, 'iter_2.pth')
    ])
    assert_ok(resumed)
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 0, iter: 2' in log and 'Iter(train) [4/4]' in log


def test_safe_loader_reads_mmengine_checkpoints_and_switches_nothing_global(toy_work_dir, tmp_path):
    checkpoint, = glob.glob(osp.join(toy_work_dir, 'best_toy_mae_iter_*.pth'))
    # The same checkpoint as numpy < 2 writes it (numpy.core, not numpy._core).
    numpy1 = str(tmp_path / 'numpy1.pth')
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(numpy1, 'w') as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray\n' in data
                data = data.replace(b'numpy._core.multiarray\n',
                                    b'numpy.core.multiarray\n')
            dst.writestr(info, data)
    code = f"""
import json, torch
import mmhybrid
from mmhybrid.checkpoints import load_checkpoint_file
def load(path, reader):
    try:
        ckpt = reader(path)
    except Exception as err:
        return type(err).__name__
    best_score = ckpt['message_hub']['runtime_info']['best_score']
    return ckpt['meta']['iter'], float(best_score)
print(json.dumps([load({checkpoint!r}, load_checkpoint_file), load({numpy1!r}, load_checkpoint_file),
                  load({checkpoint!r}, torch.load)]))
"""
    ours, ours_numpy1, plain_torch_load = run_python(code)
    assert ours[0] in (2, 4) and ours == ours_numpy1
    assert plain_torch_load == 'UnpicklingError'   # the allowlist is local to the loader


def test_allowlisted_getattr_resolves_only_history_buffer_statistics(tmp_path):
    evil = str(tmp_path / 'evil.pth')
    code = f"""
import json, numpy, torch
from mmengine.logging import HistoryBuffer
from mmhybrid.checkpoints import load_checkpoint_file

class Reach:
    def __init__(self, obj, name):
        self.args = (obj, name)
    def __reduce__(self):
        return getattr, self.args

results = []
for obj, name in [(HistoryBuffer, 'mean'), (HistoryBuffer, 'register_statistics'),
                  (numpy.ndarray, 'tofile')]:
    torch.save({{'x': Reach(obj, name)}}, {evil!r})
    try:
        results.append(load_checkpoint_file({evil!r})['x'] is getattr(obj, name))
    except Exception as err:
        results.append(type(err).__name__)
print(json.dumps(results))
"""
    assert run_python(code) == [True, 'CheckpointLoadError', 'CheckpointLoadError']


def test_amp_in_float16_on_cpu_exits_with_a_one_line_message(tmp_path):
    # --amp trains on the CPU in bfloat16 (tests/test_amp.py); float16 autocast is refused there
    result = run([sys.executable, TRAIN, TOY_CONFIG, '--amp', '--work-dir', str(tmp_path / 'wd'),
                  '--cfg-options', 'optim_wrapper.dtype=float16'], CUDA_VISIBLE_DEVICES='')
    assert result.returncode == 2
    assert 'Traceback' not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines()
                   if line.startswith('train.py: error:')]
    assert len(error_lines) == 1 and '--amp' in error_lines[0]
    assert 'bfloat16 only' in error_lines[0] and 'float16' in error_lines[0]


def test_train_py_resume_and_work_dir_options_set_the_config(monkeypatch):
    train = load_tool(TRAIN, 'mmhybrid_tools_train')
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it when unset

    def config(*argv):
        monkeypatch.setattr(sys, 'argv', ['train.py', DET_CONFIG, *argv])
        return train.build_config(train.parse_args())

    cfg = config()
    assert cfg.work_dir == osp.join('./work_dirs', 'retinanet_coco')
    assert not cfg.resume
    cfg = config('--resume', '--work-dir', 'wd')
    assert cfg.work_dir == 'wd' and cfg.resume and cfg.load_from is None
    cfg = config('--resume', 'ckpt.pth', '--auto-scale-lr')
    assert cfg.resume and cfg.load_from == 'ckpt.pth'
    assert cfg.auto_scale_lr.enable


def test_test_py_show_dir_out_and_tta_follow_the_config_scope(tmp_path):
    test = load_tool(TEST, 'mmhybrid_tools_test')
    checkpoint = tmp_path / 'model.pth'
    checkpoint.touch()

    def config(path, out, tta=False):
        args = Namespace(config=path, checkpoint=str(checkpoint), work_dir=None,
                         out=out, show=False, show_dir='painted', wait_time=2,
                         cfg_options=None, launcher='none', tta=tta)
        return test.build_config(args)

    det = config(DET_CONFIG, 'det.pkl')
    assert det.load_from == str(checkpoint)
    assert det.default_hooks.visualization.draw
    assert det.default_hooks.visualization.test_out_dir == 'painted'
    assert det.test_evaluator[-1] == dict(type='DumpDetResults',
                                          out_file_path='det.pkl')
    seg = config(SEG_CONFIG, 'masks')
    assert seg.default_hooks.visualization.draw
    assert seg.visualizer.save_dir == 'painted'
    assert seg.test_evaluator.output_dir == 'masks'

    seg = config(SEG_CONFIG, None, tta=True)
    assert seg.model.type == 'SegTTAModel' and seg.model.module.type == 'EncoderDecoder'
    assert seg.test_dataloader.dataset.pipeline == seg.tta_pipeline
    # mmdet configs without TTA settings get DetTTAModel and a flip pipeline
    det = Config.fromfile(DET_CONFIG)
    det.tta_model = det.tta_pipeline = None
    test.enable_tta(det)
    assert det.model.type == 'DetTTAModel' and det.model.module.type == 'RetinaNet'
    flip = det.test_dataloader.dataset.pipeline[-1]
    assert flip.type == 'TestTimeAug'
    assert [t.prob for t in flip.transforms[0]] == [1., 0.]


def test_replace_sync_bn_turns_every_nested_syncbn_into_bn_and_counts_them():
    from mmhybrid.utils.launch import replace_sync_bn
    cfg = dict(type='SyncBN', backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
               heads=[dict(norm_cfg=dict(type='SyncBN')), (dict(type='GN'), 'SyncBN')])
    assert replace_sync_bn(cfg) == 3
    assert cfg == dict(type='BN', backbone=dict(norm_cfg=dict(type='BN', requires_grad=True)),
                       heads=[dict(norm_cfg=dict(type='BN')), (dict(type='GN'), 'SyncBN')])


@pytest.fixture
def no_process_group(monkeypatch):
    """setup_distributed_without_cuda with the process group start recorded instead of made."""
    started = []
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda **kw: started.append(kw))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    return started


def test_sync_bn_without_cuda_is_dropped_with_one_line(no_process_group, capsys):
    """mmengine's sync_bn=torch makes every BatchNorm a SyncBatchNorm, whose training forward raises
    on CPU tensors in a process group: on CPU (gloo) it is switched off, in one line."""
    from mmengine.logging import MMLogger

    from mmhybrid.utils.launch import setup_distributed_without_cuda
    MMLogger.get_instance('sync_bn_test')
    cfg = Config(dict(model=dict(type='X'), sync_bn='torch'))
    setup_distributed_without_cuda(cfg, 'pytorch')
    assert cfg.sync_bn is None and no_process_group == [dict(backend='gloo', timeout=None)]
    said = [line for line in capsys.readouterr().out.splitlines() if 'sync_bn' in line]
    assert len(said) == 1 and said[0].endswith(
        "sync_bn='torch' ignored: SyncBatchNorm needs CUDA GPUs (NCCL), so on CPU (gloo) every BatchNorm keeps "
        'per-process statistics')
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)


def test_slurm_launch_without_cuda_takes_mmengines_slurm_variables(no_process_group, monkeypatch, tmp_path):
    """RANK, WORLD_SIZE, LOCAL_RANK from SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR from
    `scontrol show hostname` of SLURM_NODELIST (unless set); MASTER_PORT 29500 (unless set)."""
    from mmhybrid.utils.launch import setup_distributed_without_cuda
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostname node[3-4]" ] && printf "node3\\nnode4\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
    for name in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node[3-4]')
    setup_distributed_without_cuda(Config(dict(model=dict(type='X'))), 'slurm')
    assert [os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')] == \
        ['3', '4', '1', 'node3', '29500']
    assert len(no_process_group) == 1


def test_slurm_launch_outside_srun_says_what_is_missing(no_process_group, monkeypatch):
    from mmhybrid.utils import LauncherError
    from mmhybrid.utils.launch import setup_distributed_without_cuda
    for name in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LauncherError, match=r'--launcher slurm needs the variables srun sets \(SLURM_PROCID, '
                       r'SLURM_NTASKS, SLURM_NODELIST missing\)'):
        setup_distributed_without_cuda(Config(dict(model=dict(type='X'))), 'slurm')
    assert no_process_group == []
