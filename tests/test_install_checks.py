"""tools/misc/check_env.py: each install step fails with one line saying what to do, and
`cuda-build` (FORCE_CUDA=1) prepares the CUDA build of mmcv's ops without a GPU."""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHECK = str(ROOT / 'tools/misc/check_env.py')


def _load():
    spec = importlib.util.spec_from_file_location('check_env', CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(step, **env):
    full = dict(os.environ, **env)
    for key in [k for k, v in env.items() if v is None]:
        full.pop(key)
    return subprocess.run([sys.executable, CHECK, step], env=full, capture_output=True, text=True, timeout=120)


def _fake_nvcc(tmp_path, release):
    bin_dir = tmp_path / 'cuda' / 'bin'
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / 'nvcc'
    nvcc.write_text(f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.1"\n')
    nvcc.chmod(0o755)
    return str(tmp_path / 'cuda')


def _real_nvcc():
    return shutil.which('nvcc') or next(iter(sorted(glob.glob('/usr/local/cuda*/bin/nvcc'))), None)


def test_gencode_flags_follow_torch_cuda_arch_list_syntax():
    flags = _load().gencode_flags('8.0;9.0a 12.0+PTX')
    assert flags == ['-gencode=arch=compute_80,code=sm_80', '-gencode=arch=compute_90a,code=sm_90a',
                     '-gencode=arch=compute_120,code=sm_120', '-gencode=arch=compute_120,code=compute_120']


def test_cuda_home_without_nvcc_is_named_in_one_line(tmp_path):
    proc = _run('cuda-build', CUDA_HOME=str(tmp_path))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f'CUDA_HOME={tmp_path} has no bin/nvcc' in lines[0], proc.stderr


@pytest.mark.skipif(torch.version.cuda is None, reason='a CPU build of torch has no CUDA version to match')
def test_nvcc_of_another_cuda_major_version_is_refused_before_building(tmp_path):
    other = '12.4' if not torch.version.cuda.startswith('12.') else '11.8'
    proc = _run('cuda-build', CUDA_HOME=_fake_nvcc(tmp_path, other))
    assert proc.returncode == 1
    assert f'is CUDA {other}, torch {torch.__version__} is built with CUDA {torch.version.cuda}' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_malformed_arch_list_entry_is_refused(tmp_path):
    if torch.version.cuda is None:
        pytest.skip('a CPU build of torch stops before the architectures')
    proc = _run('cuda-build', CUDA_HOME=_fake_nvcc(tmp_path, torch.version.cuda), TORCH_CUDA_ARCH_LIST='sm_80')
    assert proc.returncode == 1 and "entry 'sm_80' is not of the form" in proc.stderr, proc.stderr


@pytest.mark.skipif(torch.version.cuda is None or _real_nvcc() is None,
                    reason='needs a CUDA build of torch and a CUDA toolkit (nvcc); no GPU needed')
def test_cuda_build_compiles_for_every_default_architecture_and_exports_the_toolkit():
    proc = _run('cuda-build', CUDA_HOME=None, TORCH_CUDA_ARCH_LIST=None)
    assert proc.returncode == 0, proc.stderr
    exports = dict(line.split(' ', 1)[1].split('=', 1) for line in proc.stdout.splitlines())
    assert os.path.exists(os.path.join(exports['CUDA_HOME'], 'include', 'cuda.h'))
    # the library headers torch's CUDA headers include: in the toolkit, or on the exported CPATH
    folders = [os.path.join(exports['CUDA_HOME'], 'include')] + exports.get('CPATH', '').split('$')[0].split(':')
    for header in _load().LIBRARY_HEADERS:
        assert any(os.path.exists(os.path.join(d, header)) for d in folders if d), header
    assert exports['TORCH_CUDA_ARCH_LIST'].strip("'") == _load().DEFAULT_CUDA_ARCHS
    proc = _run('cuda-build', CUDA_HOME=None, TORCH_CUDA_ARCH_LIST='5.0')   # dropped by CUDA 13
    if int(torch.version.cuda.split('.')[0]) >= 13:
        assert proc.returncode == 1 and 'cannot compile for TORCH_CUDA_ARCH_LIST="5.0"' in proc.stderr


def test_mmcv_step_names_the_cuda_state_of_the_installed_ops():
    proc = _run('mmcv', FORCE_CUDA='0')
    assert proc.returncode == 0 and 'with compiled ops (CUDA: ' in proc.stdout, proc.stderr


def _toolkit(tmp_path, headers):
    home = tmp_path / 'toolkit'
    (home / 'include').mkdir(parents=True)
    for header in headers:
        (home / 'include' / header).write_text('')
    return str(home)


def test_library_headers_come_from_the_toolkit_when_it_has_them(tmp_path):
    check_env = _load()
    assert check_env.library_include_dirs(_toolkit(tmp_path, check_env.LIBRARY_HEADERS)) == []


def test_library_headers_missing_from_the_toolkit_come_from_torchs_nvidia_wheels(tmp_path):
    pytest.importorskip('nvidia', reason='torch without its NVIDIA wheels (a CPU build)')
    check_env = _load()
    dirs = check_env.library_include_dirs(_toolkit(tmp_path, ['cusparse.h']))
    assert dirs and all(os.sep + 'nvidia' + os.sep in d for d in dirs)
    for header in check_env.LIBRARY_HEADERS[1:]:
        assert any(os.path.exists(os.path.join(d, header)) for d in dirs), header


def test_library_headers_found_nowhere_are_named_in_one_line(tmp_path, monkeypatch, capsys):
    check_env = _load()
    empty = tmp_path / 'site' / 'nvidia'
    empty.mkdir(parents=True)
    monkeypatch.setitem(sys.modules, 'nvidia', type(sys)('nvidia'))
    sys.modules['nvidia'].__path__ = [str(empty)]
    with pytest.raises(SystemExit):
        check_env.library_include_dirs(_toolkit(tmp_path, []))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'has no cusparse.h' in err[0] and 'development headers' in err[0], err
