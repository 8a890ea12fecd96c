"""Every way a checkpoint enters mmhybrid ends in the one safe loader.

A pickle whose ``__reduce__`` runs a shell command is served over a local HTTP
server (and written locally); no load path (a backbone's init_cfg, mmengine's
Pretrained init, load_from, resume, tools/test.py, convert.py, timm) may run it,
and each refuses it with the safe-loading message. A legitimate checkpoint served
the same way loads. Bad files get one line naming the file and the problem.
"""
import functools
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmhybrid.models import CloFormer, CrossFormer, CvT
from mmhybrid.checkpoints import (CheckpointLoadError, CheckpointMismatchError, CheckpointNotFoundError,
                                  load_checkpoint_file)

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / 'tools' / 'model_converters' / 'convert.py'
TOOLS_DATA = ROOT / 'tests' / 'data' / 'tools'
SMALL = dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
REFUSED = 'refused by safe (weights-only) loading'
REFUSED_RE = re.escape(REFUSED)


class RunsCode:
    """Unpickling this runs ``touch MARKER`` (the attack)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local HTTP server over ``tmp_path/www`` holding ``evil.pth`` and ``good.pth``; torch's
    download cache moved into ``tmp_path`` (also for subprocesses, through TORCH_HOME)."""
    www = tmp_path / 'www'
    www.mkdir()
    marker = tmp_path / 'PWNED'
    good = CrossFormer(arch=SMALL)
    torch.save({'model': {k: torch.randn_like(v) for k, v in good.state_dict().items()}}, www / 'good.pth')
    torch.save({'model': good.state_dict(), 'payload': RunsCode(marker)}, www / 'evil.pth')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    url = f'http://127.0.0.1:{server.server_address[1]}'
    yield dict(url=url, www=www, marker=marker)
    server.shutdown()
    server.server_close()


def run_tool(args, tmp_path, **env):
    """Run a tool as a user does; the toy model of tests/data/tools is importable."""
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TOOLS_DATA), os.environ.get('PYTHONPATH', '')]),
                   **env)
    environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(result, *needles):
    """Exit status 2, no traceback, and a last stderr line naming every needle."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last


# --------------------------------------------------------------------------------------
# A code-running pickle over HTTP: refused everywhere
# --------------------------------------------------------------------------------------
def test_backbone_init_cfg_refuses_a_code_running_url_and_loads_a_good_one(served):
    evil = CrossFormer(arch=SMALL, init_cfg=dict(type='Pretrained', checkpoint=f'{served["url"]}/evil.pth'))
    with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
        evil.init_weights()
    good = CrossFormer(arch=SMALL, init_cfg=dict(type='Pretrained', checkpoint=f'{served["url"]}/good.pth'))
    good.init_weights()
    expected = torch.load(served['www'] / 'good.pth')['model']
    assert torch.equal(good.layers[2].blocks[0].attn.qkv.weight, expected['layers.2.blocks.0.attn.qkv.weight'])
    assert not served['marker'].exists()


def test_mmengine_pretrained_init_and_load_checkpoint_use_the_safe_loader(served):
    """What mmengine's load_from, resume and Pretrained init of any module call."""
    from mmengine.model import PretrainedInit
    from mmengine.runner.checkpoint import _load_checkpoint
    import mmhybrid  # noqa: F401  (installs the loader for every scheme)
    with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
        _load_checkpoint(f'{served["url"]}/evil.pth', map_location='cpu')
    with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
        PretrainedInit(checkpoint=f'{served["url"]}/evil.pth')(nn.Linear(2, 2))
    assert 'model' in _load_checkpoint(f'{served["url"]}/good.pth', map_location='cpu')
    assert not served['marker'].exists()


def test_model_zoo_names_resolve_to_urls_read_by_the_safe_loader(served, monkeypatch):
    """open-mmlab://, torchvision:// (and modelzoo://) names: mmengine's tables give the URL, the
    download and the reading are mmhybrid's."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    url = served['url']
    monkeypatch.setattr(mmengine_checkpoint, 'get_external_models',
                        lambda: {'evil_net': f'{url}/evil.pth', 'good_net': f'{url}/good.pth'})
    monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models', lambda: {'evil_net': f'{url}/evil.pth'})
    for name in ('open-mmlab://evil_net', 'torchvision://evil_net', 'modelzoo://evil_net'):
        with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
            mmengine_checkpoint._load_checkpoint(name, map_location='cpu')
    assert 'model' in load_checkpoint_file('open-mmlab://good_net')
    with pytest.raises(CheckpointNotFoundError, match='no model named'):
        load_checkpoint_file('open-mmlab://no_such_net')
    with pytest.raises(CheckpointLoadError, match=r'cannot download .*/nothing\.pth'):
        load_checkpoint_file(f'{url}/nothing.pth')   # HTTP 404: one line, no bare URLError
    assert not served['marker'].exists()


def test_timm_refuses_a_code_running_file_by_url_and_checkpoint_path(served):
    timm = pytest.importorskip('timm')
    import mmhybrid.timm_models  # noqa: F401
    with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
        timm.create_model('crossformer_t', features_only=True, pretrained=True,
                          pretrained_cfg_overlay=dict(url=f'{served["url"]}/evil.pth'))
    for features_only in (True, False):
        with pytest.raises(CheckpointLoadError, match=REFUSED_RE):
            timm.create_model('crossformer_t', features_only=features_only,
                              checkpoint_path=str(served['www'] / 'evil.pth'))
    assert not served['marker'].exists()


def _toy_checkpoint(path: Path, payload=None) -> None:
    """A checkpoint of the toy regressor of tests/data/tools, as mmengine saves one (plus ``payload``)."""
    ckpt = {'meta': {'epoch': 0, 'iter': 4},
            'state_dict': {'linear.weight': torch.tensor([[0.5, -0.25]]), 'linear.bias': torch.tensor([0.1])}}
    if payload is not None:
        ckpt['payload'] = payload
    torch.save(ckpt, path)


@pytest.mark.slow
def _tool_runs(url, tmp_path):
    """tools/test.py CHECKPOINT, train.py --resume and load_from, convert.py SRC, each reading ``{url}/NAME``."""
    config = TOOLS_DATA / 'toy_config.py'
    return {
        'test.py': lambda name: [ROOT / 'tools/test.py', config, f'{url}/toy_{name}', '--work-dir',
                                 tmp_path / 'wd_test'],
        'train.py --resume': lambda name: [ROOT / 'tools/train.py', config, '--work-dir', tmp_path / 'wd_resume',
                                           '--resume', f'{url}/toy_{name}'],
        'load_from': lambda name: [ROOT / 'tools/train.py', config, '--work-dir', tmp_path / 'wd_load',
                                   '--cfg-options', f'load_from={url}/toy_{name}'],
        'convert.py': lambda name: [CONVERT, 'crossformer', f'{url}/{name}', tmp_path / 'out.pth'],
    }


@pytest.mark.parametrize('tool', ['test.py', 'train.py --resume', 'load_from', 'convert.py'])
def test_tools_refuse_a_code_running_url_in_one_line(served, tmp_path, tool):
    _toy_checkpoint(served['www'] / 'toy_evil.pth', RunsCode(served['marker']))
    result = run_tool(_tool_runs(served['url'], tmp_path)[tool]('evil.pth'), tmp_path)
    assert_one_line_error(result, 'evil.pth', REFUSED)
    assert not served['marker'].exists()
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('tool', ['test.py', 'convert.py'])
def test_tools_load_a_good_url(served, tmp_path, tool):
    _toy_checkpoint(served['www'] / 'toy_good.pth')
    result = run_tool(_tool_runs(served['url'], tmp_path)[tool]('good.pth'), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    if tool == 'convert.py':
        assert 'layers.0.blocks.0.attn.qkv.weight' in torch.load(tmp_path / 'out.pth')['state_dict']


# --------------------------------------------------------------------------------------
# Bad files: one line naming the file and the problem
# --------------------------------------------------------------------------------------
#: case -> (words the message must contain, the family and arch it is loaded as)
BAD = {
    'missing.pth': ('no such file', 'CrossFormer', SMALL),
    'empty.pth': ('empty', 'CrossFormer', SMALL),
    'folder.pth': ('directory', 'CrossFormer', SMALL),
    'text.pth': ('not a PyTorch checkpoint', 'CrossFormer', SMALL),
    'truncated.pth': ('truncated or corrupt', 'CrossFormer', SMALL),
    'list.pth': ('holds a list', 'CrossFormer', SMALL),
    'weightless.pth': ('holds no weights', 'CrossFormer', SMALL),
    'other-family.pth': ('a CvT', 'CrossFormer', SMALL),
    'other-variant.pth': ("fit CloFormer(arch='xxs')", 'CloFormer', 'xs'),
}


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    """case -> path of a file that is wrong in that way."""
    folder = tmp_path_factory.mktemp('bad')
    (folder / 'empty.pth').write_bytes(b'')
    (folder / 'folder.pth').mkdir()
    (folder / 'text.pth').write_text('<html>404 Not Found</html>\n')
    torch.save({'model': CrossFormer(arch=SMALL).state_dict()}, folder / 'truncated.pth')
    (folder / 'truncated.pth').write_bytes((folder / 'truncated.pth').read_bytes()[:2000])
    torch.save([torch.zeros(2)], folder / 'list.pth')
    torch.save({'epoch': 3, 'config': {'lr': 0.1}}, folder / 'weightless.pth')
    torch.save(CvT(arch=dict(embed_dims=(16, 32, 48), depths=(1, 1, 1), num_heads=(1, 2, 3))).state_dict(),
               folder / 'other-family.pth')
    torch.save({'model': CloFormer(arch='xxs').state_dict()}, folder / 'other-variant.pth')
    return {case: folder / case for case in BAD}


@pytest.mark.parametrize('case', list(BAD))
def test_init_cfg_gives_one_line_naming_the_file_and_the_problem(bad_files, case):
    from mmhybrid.registry import MODELS
    words, family, arch = BAD[case]
    path = bad_files[case]
    backbone = MODELS.build(dict(type=f'mmhybrid.{family}', arch=arch,
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    with pytest.raises((CheckpointLoadError, CheckpointMismatchError)) as err:
        backbone.init_weights()
    message = str(err.value)
    assert '\n' not in message and str(path) in message and words in message, message
    assert '--trust' not in message, message   # trusting the file would not help with any of these
    if case == 'missing.pth':
        assert isinstance(err.value, CheckpointNotFoundError) and isinstance(err.value, FileNotFoundError)


def _convert_cli():
    spec = importlib.util.spec_from_file_location('convert_cli', CONVERT)
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    return convert


@pytest.mark.parametrize('case', list(BAD))
def test_convert_gives_one_line_naming_the_file_and_the_problem(bad_files, tmp_path, capsys, case):
    words, family, arch = BAD[case]
    path = bad_files[case]
    args = [family.lower(), str(path), str(tmp_path / 'out.pth')] + (['--arch', arch] if case == 'other-variant.pth'
                                                                     else [])
    assert _convert_cli().main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and words in err, err
    assert '--trust' not in err, err
    assert not (tmp_path / 'out.pth').exists()


def test_convert_checks_the_family_and_with_arch_the_variant(tmp_path, capsys):
    src = tmp_path / 'crossformer-small-custom.pth'
    torch.save({'model': CrossFormer(arch=SMALL).state_dict()}, src)
    convert = _convert_cli()
    assert convert.main(['cvt', str(src), str(tmp_path / 'a.pth')]) == 2
    assert 'not a cvt checkpoint' in capsys.readouterr().err
    assert convert.main(['crossformer', str(src), str(tmp_path / 'b.pth')]) == 0   # a custom arch converts
    assert convert.main(['crossformer', str(src), str(tmp_path / 'c.pth'), '--arch', 'tiny']) == 2
    assert 'does not match CrossFormer' in capsys.readouterr().err
    assert convert.main(['crossformer', str(src), str(tmp_path / 'd.pth'), '--arch', 'huge']) == 2
    assert "Unknown CrossFormer arch 'huge'" in capsys.readouterr().err
    xxs = tmp_path / 'cloformer-xxs.pth'
    torch.save({'model': CloFormer(arch='xxs').state_dict()}, xxs)
    assert convert.main(['cloformer', str(xxs), str(tmp_path / 'e.pth'), '--arch', 'xxs']) == 0
    assert torch.load(tmp_path / 'e.pth')['meta']['arch'] == 'xxs'


def test_convert_cli_prints_one_line_and_no_traceback(bad_files, tmp_path):
    path = bad_files['weightless.pth']
    assert_one_line_error(run_tool([CONVERT, 'crossformer', path, tmp_path / 'out.pth'], tmp_path),
                          str(path), 'holds no weights')


# --------------------------------------------------------------------------------------
# The converter never overwrites or deletes its input
# --------------------------------------------------------------------------------------
def test_convert_never_overwrites_or_deletes_its_input_whatever_the_names(tmp_path, capsys):
    convert = _convert_cli()
    state = {'model': CrossFormer(arch=SMALL).state_dict()}
    folder = tmp_path / 'x'
    folder.mkdir()
    # the input named like the temporary file of an older converter, and like dst + '.tmp'
    src = folder / 'X.pth.tmp'
    torch.save(state, src)
    before = src.read_bytes()
    assert convert.main(['crossformer', str(src), str(folder / 'X.pth')]) == 0
    assert src.read_bytes() == before
    # dst is the input, a symlink to it, or a hard link to it, with --force
    (folder / 'link.pth').symlink_to(src)
    os.link(src, folder / 'hard.pth')
    for dst in (src, folder / 'link.pth', folder / 'hard.pth'):
        assert convert.main(['crossformer', str(src), str(dst), '--force']) == 2
        assert 'never overwrites its input' in capsys.readouterr().err
        assert src.read_bytes() == before
    # dst is a directory, with --force: refused, nothing left behind
    listing = sorted(p.name for p in folder.iterdir())
    assert convert.main(['crossformer', str(src), str(folder), '--force']) == 2
    assert 'is a directory' in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == listing
    # an existing dst without --force stays as it is
    (folder / 'keep.pth').write_bytes(b'keep me')
    assert convert.main(['crossformer', str(src), str(folder / 'keep.pth')]) == 2
    assert (folder / 'keep.pth').read_bytes() == b'keep me'
    # a failure while writing leaves neither dst nor a temporary file
    assert convert.main(['cvt', str(src), str(folder / 'fail.pth')]) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(listing + ['keep.pth'])
    assert src.read_bytes() == before


def test_convert_cleans_up_its_temporary_file_when_saving_fails(tmp_path, monkeypatch):
    convert = _convert_cli()
    src = tmp_path / 'in.pth'
    torch.save({'model': CrossFormer(arch=SMALL).state_dict()}, src)
    out = tmp_path / 'out'
    out.mkdir()

    def broken_save(obj, f):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(convert.torch, 'save', broken_save)
    assert convert.main(['crossformer', str(src), str(out / 'x.pth')]) == 2
    assert list(out.iterdir()) == []
