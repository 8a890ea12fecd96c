"""Tests of tools/analysis/get_flops.py and tools/analysis/benchmark.py.

The tools are scripts (tools/ is not a package): their functions are loaded by path, and
the command lines are run as subprocesses with this interpreter. A small stand-in
backbone with one scaled_dot_product_attention call (registered under a test-only name)
gives FLOP counts that can be checked by hand.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
GET_FLOPS = ROOT / 'tools' / 'analysis' / 'get_flops.py'
BENCHMARK = ROOT / 'tools' / 'analysis' / 'benchmark.py'


def _load(path: Path, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def gf():
    # the name benchmark.py uses, so both share one copy
    return _load(GET_FLOPS, 'mmhybrid_tools_get_flops')


@pytest.fixture(scope='module')
def bm(gf):
    return _load(BENCHMARK, 'mmhybrid_tools_benchmark')


# --------------------------------------------------------------------------------------
# stand-in backbone: conv patch embedding, attention block, two NCHW outputs
# --------------------------------------------------------------------------------------

STANDIN_SOURCE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmhybrid.registry import MODELS


@MODELS.register_module(name='_AnalysisToolsStandIn', force=True)
class AnalysisToolsStandIn(nn.Module):
    """Patch-embed conv (stride 4), one attention block, outputs at strides 4 and 8."""

    def __init__(self, embed_dim=16, num_heads=2, drop_path_rate=0.0, alloc_mib=0):
        super().__init__()
        self.embed_dim, self.num_heads, self.alloc_mib = embed_dim, num_heads, alloc_mib
        self.patch_embed = nn.Conv2d(3, embed_dim, 4, stride=4)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.drop = nn.Dropout(drop_path_rate)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.num_heads, c // self.num_heads) \\
            .permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        t = t + self.drop(self.proj(a.transpose(1, 2).reshape(b, h * w, c)))
        if self.alloc_mib:  # a known activation kept for backward (memory tests)
            big = torch.ones(self.alloc_mib * 2**18, device=x.device) * self.scale
            t = t + big.sum() * 0
        y = t.transpose(1, 2).reshape(b, c, h, w)
        return y, F.avg_pool2d(y, 2)
'''


def standin_flops(h, w, embed_dim=16, num_heads=2, batch=1):
    """Hand count (multiply-add = 2) of the stand-in's forward."""
    n = (h // 4) * (w // 4)
    d = embed_dim // num_heads
    conv = 2 * batch * n * embed_dim * 3 * 4 * 4
    qkv = 2 * batch * n * embed_dim * 3 * embed_dim
    proj = 2 * batch * n * embed_dim * embed_dim
    attention = 4 * batch * num_heads * n * n * d  # q@k^T and p@v
    return conv + qkv + proj + attention, attention


def standin_params(embed_dim=16):
    e = embed_dim
    return (3 * 16 * e + e) + (e * 3 * e + 3 * e) + (e * e + e) + 1


@pytest.fixture(scope='module')
def standin_dir(tmp_path_factory):
    """A folder with the stand-in module, for subprocesses (PYTHONPATH, --import-module)."""
    d = tmp_path_factory.mktemp('standin')
    (d / 'analysis_tools_standin.py').write_text(STANDIN_SOURCE)
    return d


@pytest.fixture(scope='module')
def standin(standin_dir):
    """The stand-in registered in this process, unregistered afterwards (other tests may
    walk the registry)."""
    from mmhybrid.registry import MODELS
    sys.path.insert(0, str(standin_dir))
    try:
        module = importlib.import_module('analysis_tools_standin')
    finally:
        sys.path.remove(str(standin_dir))
    yield module.AnalysisToolsStandIn
    MODELS._module_dict.pop('_AnalysisToolsStandIn', None)
    sys.modules.pop('analysis_tools_standin', None)


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """get_flops sets the config's default scope (init_default_scope), as mmdet/mmseg
    tools do; drop the scopes a test created so that later tests see the old one."""
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name, None)


def run_tool(script, *args, extra_pythonpath=None, timeout=300):
    env = dict(os.environ)
    if extra_pythonpath:
        env['PYTHONPATH'] = os.pathsep.join(
            [str(extra_pythonpath)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{script.name} failed:\n{proc.stdout}\n{proc.stderr[-5000:]}'
    return proc.stdout


# --------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------

class CrossAttention(nn.Module):
    """Queries from x, keys/values from y: one scaled_dot_product_attention call."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)

    def forward(self, x, y, mask=None):
        b, l, c = x.shape
        s = y.shape[1]
        q = self.q(x).reshape(b, l, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.kv(y).reshape(b, s, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_count_flops_includes_attention_as_4BHLSd(gf):
    b, l, s, dim, heads = 2, 24, 40, 32, 4
    d = dim // heads
    model = CrossAttention(dim, heads).eval()
    x, y = torch.randn(b, l, dim), torch.randn(b, s, dim)
    with torch.no_grad():
        res = gf.count_flops(lambda: model(x, y), root=model)
    attention = 4 * b * heads * l * s * d
    linear = 2 * b * l * dim * dim + 2 * b * s * dim * 2 * dim
    assert res['attention'] == attention
    assert res['total'] == linear + attention
    # the same with a mask (the CPU kernel takes masks too)
    with torch.no_grad():
        masked = gf.count_flops(lambda: model(x, y, torch.zeros(l, s)))
    assert masked['total'] == linear + attention


def test_count_flops_counts_attention_backward(gf):
    b, h, l, s, d = 1, 2, 16, 24, 8
    q = torch.randn(b, h, l, d, requires_grad=True)
    k = torch.randn(b, h, s, d, requires_grad=True)
    v = torch.randn(b, h, s, d, requires_grad=True)
    res = gf.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    # forward: 2 matmuls; backward: score recompute + 4 gradient matmuls (torch's formula)
    assert res['total'] == res['attention'] == (4 + 10) * b * h * l * s * d


def test_count_flops_counts_fused_onednn_convolutions_as_the_plain_ones(gf):
    """Conv2Former's inference path (oneDNN convs with fused epilogues) counts the
    same FLOPs as its autograd path (plain convolutions)."""
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type="mmhybrid.Conv2Former", arch=dict(
        embed_dims=8, depths=(1, 1, 1, 1), kernel_size=3))).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        fused = gf.count_flops(lambda: model(x))
    plain = gf.count_flops(lambda: model(x))   # autograd on: unfused
    assert fused['total'] == plain['total'] > 0


def test_count_flops_breaks_down_per_module_including_containers(gf):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          nn.ModuleList([nn.Linear(4, 4)]))

    def run():
        out = model[0](torch.randn(1, 3, 4, 4))
        return model[1][0](out)  # container never called itself

    res = gf.count_flops(run, root=model)
    conv = 2 * 8 * 3 * 9 * 16
    lin = 2 * 8 * 4 * 4 * 4
    assert res['per_module'] == {'': conv + lin, '0': conv, '1': lin, '1.0': lin}


def test_backbone_cfg_parsing_accepts_json_literal_and_dict_call_but_no_code(gf):
    want = {'type': 'mmhybrid.CrossFormer', 'arch': 'small', 'out_indices': (1, 2)}
    assert gf.parse_cfg_literal("dict(type='mmhybrid.CrossFormer', arch='small', "
                                "out_indices=(1, 2))") == want
    assert gf.parse_cfg_literal("{'type': 'mmhybrid.CrossFormer', 'arch': 'small', "
                                "'out_indices': (1, 2)}") == want
    assert gf.parse_cfg_literal('{"type": "X", "with_cp": true}') == {'type': 'X',
                                                                       'with_cp': True}
    with pytest.raises(ValueError):
        gf.parse_cfg_literal("__import__('os').system('true')")
    with pytest.raises(ValueError):
        gf.parse_cfg_literal("dict(arch='small')")  # no type
    assert gf.resolve_shape([512]) == (512, 512)
    assert gf.resolve_shape([800, 1216]) == (800, 1216)
    with pytest.raises(ValueError):
        gf.resolve_shape([1, 2, 3])


# --------------------------------------------------------------------------------------
# get_flops.py
# --------------------------------------------------------------------------------------

def test_get_flops_cli_on_backbone_prints_params_and_gflops_with_attention(
        standin_dir, tmp_path):
    out_json = tmp_path / 'flops.json'
    out = run_tool(GET_FLOPS, '--import-module', 'analysis_tools_standin',
                   '--backbone', '_AnalysisToolsStandIn', '--shape', 32, 48, '--depth', 1,
                   '--json', out_json, extra_pythonpath=standin_dir)
    total, attention = standin_flops(32, 48)
    params = standin_params()
    assert f'{params / 1e6:.3f} M total' in out
    assert re.search(rf'FLOPs:\s+{total / 1e9:.3f} GFLOPs', out), out
    assert re.search(rf'MACs:\s+{total / 2e9:.3f} GMACs', out), out
    assert 'Input shape:  (1, 3, 32, 48)' in out
    assert 'patch_embed' in out and 'qkv' in out  # --depth 1 table
    data = json.loads(out_json.read_text())
    assert data['total'] == total and data['attention'] == attention > 0
    assert data['params'] == params


def test_analyze_model_counts_standin_backbone_exactly(gf, standin):
    model = standin()
    res = gf.analyze_model(model, [64], is_backbone=True)
    total, attention = standin_flops(64, 64)
    assert res['total'] == total and res['attention'] == attention
    assert res['params'] == res['backbone_params'] == standin_params()
    assert res['input_shape'] == [1, 3, 64, 64]
    assert res['per_module']['qkv'] == 2 * 256 * 16 * 48


RETINANET_R18 = '''
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
'''


def test_get_flops_cli_on_mmdet_config_counts_extract_feat_and_head(tmp_path):
    cfg = tmp_path / 'retinanet_r18_tiny.py'
    cfg.write_text(RETINANET_R18)
    out_json = tmp_path / 'flops.json'
    out = run_tool(GET_FLOPS, cfg, '--shape', 128, 160, '--depth', 1, '--json', out_json)
    data = json.loads(out_json.read_text())
    assert data['model_type'] == 'RetinaNet'
    assert data['counted'].startswith('model._forward')  # backbone + neck + head
    assert data['backbone_params'] == 11176512  # ResNet-18 without its fc
    assert data['params'] > data['backbone_params']
    assert 0 < data['backbone_flops'] < data['total']
    assert data['input_shape'] == [1, 3, 128, 160]
    assert re.search(r'Params:\s+\d+\.\d{3} M total', out)
    for part in ('backbone', 'neck', 'bbox_head'):
        assert re.search(rf'^\s+{part}\s+\d', out, re.M), out


UPERNET_R18 = '''
_base_ = 'mmseg::_base_/models/upernet_r50.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=32, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=32, norm_cfg=norm_cfg))
'''


def test_analyze_model_on_mmseg_config_without_default_scope_builds_a_segmentor(
        gf, tmp_path):
    cfg_path = tmp_path / 'upernet_r18_tiny.py'
    cfg_path.write_text(UPERNET_R18)
    cfg = gf.load_config(str(cfg_path))
    assert gf.config_scope(cfg) == 'mmseg'
    model = gf.build_model_from_config(cfg)
    res = gf.analyze_model(model, [64, 96], is_backbone=False)
    assert res['model_type'] == 'EncoderDecoder'
    assert res['counted'].startswith('model._forward')  # extract_feat + decode head
    assert 0 < res['backbone_flops'] < res['total']
    # the auxiliary head is a training-only head: not part of the counted forward
    assert res['per_module']['auxiliary_head'] == 0 < res['per_module']['decode_head']


# --------------------------------------------------------------------------------------
# benchmark.py
# --------------------------------------------------------------------------------------

BENCH_FIELDS = ('forward_ms_median', 'forward_ms_mean', 'images_per_s', 'fwd_bwd_ms_median',
                'fwd_bwd_peak_mem_gib', 'forward_gflops', 'forward_gmacs',
                'matmul_fp32_gflops_per_s', 'efficiency_pct', 'params_m')


def test_benchmark_cli_prints_all_fields_and_writes_json(standin_dir, tmp_path):
    out_json = tmp_path / 'bench.json'
    out = run_tool(BENCHMARK, '--import-module', 'analysis_tools_standin',
                   '--backbone', '_AnalysisToolsStandIn', '--shape', 64, 64, '--iters', 1,
                   '--warmup', 0, '--device', 'cpu', '--threads', 1, '--matmul-size', 512,
                   '--json', out_json, extra_pythonpath=standin_dir)
    for label in ('forward median / mean', 'throughput', 'images/s', 'fwd+bwd median',
                  'fwd+bwd peak memory', 'GiB', 'forward FLOPs', 'GMACs',
                  'fp32 matmul rate', 'GFLOP/s', 'efficiency'):
        assert label in out, f'{label!r} missing in:\n{out}'
    data = json.loads(out_json.read_text())
    for key in BENCH_FIELDS:
        assert isinstance(data[key], float), key
    total, _ = standin_flops(64, 64)
    assert data['forward_gflops'] == pytest.approx(total / 1e9)  # counted as get_flops does
    assert data['params_m'] == pytest.approx(standin_params() / 1e6)
    assert data['threads'] == 1 and data['input_shape'] == [1, 3, 64, 64]
    assert data['forward_ms_median'] > 0 and data['fwd_bwd_ms_median'] > 0
    assert data['matmul_fp32_gflops_per_s'] > 0 and data['efficiency_pct'] > 0
    assert data['fwd_bwd_peak_mem_gib'] >= 0


def test_benchmark_times_forward_in_eval_inference_and_fwd_bwd_in_train_mode(bm):
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            seen.append((self.training, torch.is_inference_mode_enabled(), self.drop.p))
            return (self.drop(self.conv(x)),)

    model = Probe()
    assert bm.zero_stochastic_layers(model) == 1
    x = torch.randn(1, 3, 8, 8)
    fwd = bm.time_forward(model, x, warmup=1, iters=2)
    assert len(fwd) == 2 and seen == [(False, True, 0.0)] * 3
    seen.clear()
    fb = bm.time_forward_backward(model, x, warmup=0, iters=2)
    assert len(fb) == 2 and seen == [(True, False, 0.0)] * 2


def test_zero_stochastic_layers_disables_drop_path(bm):
    from mmcv.cnn.bricks.drop import DropPath
    model = nn.Sequential(DropPath(0.3), nn.Dropout(0.1), nn.Identity())
    assert bm.zero_stochastic_layers(model) == 2
    assert model[0].drop_prob == 0.0 and model[1].p == 0.0
    cfg = bm.prepare_backbone_cfg(dict(type='X', drop_path_rate=0.2,
                                       init_cfg=dict(type='Pretrained')), with_cp=True)
    assert cfg == dict(type='X', drop_path_rate=0.0, with_cp=True)


def test_matmul_rate_is_positive_gflops(bm):
    rate = bm.matmul_rate('cpu', size=256, reps=2)
    assert 0.1 < rate < 1e6


def test_cpu_peak_memory_measures_the_step_not_the_parent_peak(bm, standin_dir, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', str(standin_dir))
    # raise this process's high-water mark well above what the child's step needs (a
    # child's ru_maxrss starts at the parent's peak on Linux, so it alone would see this)
    big = torch.ones(384 * 2**20)  # 1.5 GiB
    del big
    spec = dict(backbone_cfg=dict(type='_AnalysisToolsStandIn', alloc_mib=128),
                default_scope=None, source='backbone', import_modules=['analysis_tools_standin'],
                shape=[32, 32], batch=1, in_channels=3, device='cpu', threads=1, amp=None)
    mem = bm.cpu_peak_memory(spec)
    inc_gib = mem['increase_bytes'] / 2**30
    assert not mem['lower_bound']
    # the stand-in's step holds 2 x 128 MiB (ones, and its product kept for backward)
    assert 0.2 < inc_gib < 0.6, mem


# --------------------------------------------------------------------------------------
# the project's CrossFormer (when present)
# --------------------------------------------------------------------------------------

HAS_CROSSFORMER = (ROOT / 'mmhybrid' / 'models' / 'crossformer.py').exists()
RETINANET_CFG = ROOT / 'configs' / 'retinanet_crossformer_s_coco.py'


@pytest.mark.skipif(not HAS_CROSSFORMER, reason='mmhybrid/models/crossformer.py not written yet')
def test_get_flops_crossformer_s_matches_paper_params_and_flops(gf):
    model = gf.build_backbone(dict(type='CrossFormer', arch='small'))
    res = gf.analyze_model(model, [224], is_backbone=True)
    assert res['params'] == pytest.approx(29.887e6, abs=1e3)  # dense backbone, no head
    # paper: 4.9G "FLOPs" (= MACs) at 224x224, attention included
    assert res['total'] / 2e9 == pytest.approx(4.9, abs=0.05)
    assert res['attention'] > 0


@pytest.mark.skipif(not RETINANET_CFG.exists(), reason='config not written yet')
def test_get_flops_cli_on_retinanet_crossformer_s_config(tmp_path):
    out_json = tmp_path / 'flops.json'
    run_tool(GET_FLOPS, RETINANET_CFG, '--shape', 256, 320, '--json', out_json)
    data = json.loads(out_json.read_text())
    assert data['model_type'] == 'RetinaNet'
    assert data['counted'].startswith('model._forward')
    assert data['backbone_params'] == pytest.approx(29.887e6, abs=1e3)
    assert data['attention'] > 0 and 0 < data['backbone_flops'] < data['total']
