"""Tests of mmhybrid.analysis and of its command lines tools/analysis/get_flops.py and
tools/analysis/benchmark.py.

The package is tested in this process; the command lines are run as subprocesses with
this interpreter. A small stand-in backbone with one scaled_dot_product_attention call
(registered under a test-only name) gives FLOP counts that can be checked by hand.
"""
import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmhybrid.analysis import benchmark as bm
from mmhybrid.analysis import build, cli, flops, measure, report
from family_archs import SMALL_ARCH

ROOT = Path(__file__).resolve().parents[1]
GET_FLOPS = ROOT / 'tools' / 'analysis' / 'get_flops.py'
BENCHMARK = ROOT / 'tools' / 'analysis' / 'benchmark.py'


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


def test_count_flops_includes_attention_as_4BHLSd():
    b, l, s, dim, heads = 2, 24, 40, 32, 4
    d = dim // heads
    model = CrossAttention(dim, heads).eval()
    x, y = torch.randn(b, l, dim), torch.randn(b, s, dim)
    with torch.no_grad():
        res = flops.count_flops(lambda: model(x, y), root=model)
    attention = 4 * b * heads * l * s * d
    linear = 2 * b * l * dim * dim + 2 * b * s * dim * 2 * dim
    assert res['attention'] == attention
    assert res['total'] == linear + attention
    # the same with a mask (the CPU kernel takes masks too)
    with torch.no_grad():
        masked = flops.count_flops(lambda: model(x, y, torch.zeros(l, s)))
    assert masked['total'] == linear + attention


def test_count_flops_counts_attention_backward():
    b, h, l, s, d = 1, 2, 16, 24, 8
    q = torch.randn(b, h, l, d, requires_grad=True)
    k = torch.randn(b, h, s, d, requires_grad=True)
    v = torch.randn(b, h, s, d, requires_grad=True)
    res = flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    # forward: 2 matmuls; backward: score recompute + 4 gradient matmuls (torch's formula)
    assert res['total'] == res['attention'] == (4 + 10) * b * h * l * s * d


def test_count_flops_counts_fused_onednn_convolutions_as_the_plain_ones():
    """Conv2Former's inference path (oneDNN convs with fused epilogues) counts the
    same FLOPs as its autograd path (plain convolutions)."""
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type="mmhybrid.Conv2Former", arch=dict(
        embed_dims=8, depths=(1, 1, 1, 1), kernel_size=3))).eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        fused = flops.count_flops(lambda: model(x))
    plain = flops.count_flops(lambda: model(x))   # autograd on: unfused
    assert fused['total'] == plain['total'] > 0


def test_count_flops_counts_grouped_convolution_backward_per_group():
    """Each of grad_input and grad_weight costs one forward, grouped or not (torch's own
    formula counts a depthwise conv's grad_weight `groups` times)."""
    x = torch.randn(2, 16, 10, 12, requires_grad=True)
    for conv in (nn.Conv2d(16, 32, 3, groups=16), nn.Conv2d(16, 32, 3),
                 nn.ConvTranspose2d(16, 32, 3, stride=2, groups=4)):
        forward = flops.count_flops(lambda: conv(x))['total']
        assert flops.count_flops(lambda: conv(x).sum().backward())['total'] == 3 * forward
        with torch.no_grad():  # the fused oneDNN path, if taken, counts the same
            assert flops.count_flops(lambda: conv(x))['total'] == forward
    conv = nn.Conv2d(16, 16, 5, padding=2, groups=16)
    y = torch.randn(1, 16, 8, 8)  # no input gradient: weight gradient only
    assert flops.count_flops(lambda: conv(y).sum().backward())['total'] == \
        2 * 2 * 16 * 25 * 64


def test_count_flops_breaks_down_per_module_including_containers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          nn.ModuleList([nn.Linear(4, 4)]))

    def run():
        out = model[0](torch.randn(1, 3, 4, 4))
        return model[1][0](out)  # container never called itself

    res = flops.count_flops(run, root=model)
    conv = 2 * 8 * 3 * 9 * 16
    lin = 2 * 8 * 4 * 4 * 4
    assert res['per_module'] == {'': conv + lin, '0': conv, '1': lin, '1.0': lin}


def test_backbone_cfg_parsing_accepts_json_literal_and_dict_call_but_no_code():
    want = {'type': 'mmhybrid.CrossFormer', 'arch': 'small', 'out_indices': (1, 2)}
    assert build.parse_cfg_literal("dict(type='mmhybrid.CrossFormer', arch='small', "
                                "out_indices=(1, 2))") == want
    assert build.parse_cfg_literal("{'type': 'mmhybrid.CrossFormer', 'arch': 'small', "
                                "'out_indices': (1, 2)}") == want
    assert build.parse_cfg_literal('{"type": "X", "with_cp": true}') == {'type': 'X',
                                                                       'with_cp': True}
    with pytest.raises(ValueError):
        build.parse_cfg_literal("__import__('os').system('true')")
    with pytest.raises(ValueError):
        build.parse_cfg_literal("dict(arch='small')")  # no type
    assert build.resolve_shape([512]) == (512, 512)
    assert build.resolve_shape([800, 1216]) == (800, 1216)
    with pytest.raises(ValueError):
        build.resolve_shape([1, 2, 3])


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


def test_analyze_model_counts_standin_backbone_exactly(standin):
    model = standin()
    res = flops.analyze_model(model, [64], is_backbone=True)
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


def test_analyze_model_on_mmseg_config_without_default_scope_builds_a_segmentor(tmp_path):
    cfg_path = tmp_path / 'upernet_r18_tiny.py'
    cfg_path.write_text(UPERNET_R18)
    cfg = build.load_config(str(cfg_path))
    assert build.config_scope(cfg) == 'mmseg'
    model = build.build_model_from_config(cfg)
    res = flops.analyze_model(model, [64, 96], is_backbone=False)
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
                'peak_fp32_gflops_per_s', 'peak_bf16_gflops_per_s', 'efficiency_pct', 'params_m',
                'train_ms_median', 'forward_bf16_ms_median', 'train_bf16_ms_median',
                'train_gflops')
DEFAULT_MODES = ('forward', 'train', 'forward-bf16', 'train-bf16')


def test_benchmark_cli_prints_all_fields_and_writes_json_and_markdown(standin_dir, tmp_path):
    out_json, out_md = tmp_path / 'bench.json', tmp_path / 'bench.md'
    args = ['--import-module', 'analysis_tools_standin', '--backbone', '_AnalysisToolsStandIn',
            '--shape', '64', '64', '--iters', '1', '--warmup', '0', '--device', 'cpu',
            '--threads', '1', '--gemm-shapes', '256,512x128x256', '--json', str(out_json),
            '--markdown', str(out_md)]
    out = run_tool(BENCHMARK, *args, extra_pythonpath=standin_dir)
    for label in ('forward median / mean', 'throughput', 'images/s', 'fwd+bwd median',
                  'fwd+bwd peak memory', 'GiB', 'forward FLOPs', 'GMACs',
                  'fp32 peak GEMM rate', 'bf16 peak GEMM rate', 'GFLOP/s', 'efficiency',
                  'of the bf16 peak', 'forward-bf16 median',
                  'train-bf16 median', 'autocast bf16'):
        assert label in out, f'{label!r} missing in:\n{out}'
    data = json.loads(out_json.read_text())
    for key in BENCH_FIELDS:
        assert isinstance(data[key], float), key
    total, _ = standin_flops(64, 64)
    assert data['forward_gflops'] == pytest.approx(total / 1e9)  # counted as get_flops does
    assert data['params_m'] == pytest.approx(standin_params() / 1e6)
    assert data['threads'] == 1 and data['input_shape'] == [1, 3, 64, 64]
    assert data['forward_ms_median'] > 0 and data['fwd_bwd_ms_median'] > 0
    assert data['peak_fp32_gflops_per_s'] > 0 and data['efficiency_pct'] > 0
    assert {data['peak_fp32_gemm'], data['peak_bf16_gemm']} <= {'256x256x256', '512x128x256'}
    assert data['fwd_bwd_peak_mem_gib'] >= 0
    assert list(data['modes']) == list(DEFAULT_MODES)
    for mode in data['modes'].values():
        assert mode['ms_median'] > 0 and mode['peak_mem_gib'] >= 0
    # markdown: the machine and the command, then one row per mode
    lines = out_md.read_text().splitlines()
    assert lines[0].startswith('Measured on ') and f'{os.cpu_count()} cores' in lines[0]
    assert f'torch {torch.__version__}' in lines[0] and 'device cpu' in lines[0]
    assert f'`python tools/analysis/benchmark.py {shlex.join(args)}`' in lines[0]
    rows = [line for line in lines if line.startswith('| _AnalysisToolsStandIn | 64x64 |')]
    assert [row.split(' | ')[2:4] for row in rows] == [
        ['forward', 'fp32'], ['train', 'fp32'], ['forward-bf16', 'autocast bf16'],
        ['train-bf16', 'autocast bf16']]
    assert all(row.endswith(' GiB |') for row in rows)


def test_time_step_runs_forward_in_eval_inference_and_train_in_train_mode(monkeypatch):
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            autocast = torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu')
            seen.append((self.training, torch.is_inference_mode_enabled(), self.drop.p,
                         autocast))
            return (self.drop(self.conv(x)),)

    model = Probe()
    assert build.zero_stochastic_layers(model) == 1
    x = torch.randn(1, 3, 8, 8)
    fwd = measure.time_step(model, x, False, warmup=1, iters=2)
    assert len(fwd) == 2 and seen == [(False, True, 0.0, False)] * 3
    seen.clear()
    fb = measure.time_step(model, x, True, warmup=0, iters=2)
    assert len(fb) == 2 and seen == [(True, False, 0.0, False)] * 2
    assert model.conv.weight.grad is None  # cleared afterwards
    seen.clear()
    measure.time_step(model, x, False, warmup=0, iters=1, amp='bf16')
    measure.time_step(model, x, True, warmup=0, iters=1, amp='bf16')
    assert seen == [(False, True, 0.0, torch.bfloat16), (True, False, 0.0, torch.bfloat16)]


def test_parse_modes_defaults_dedupes_and_refuses_unknown_names():
    modes = bm.parse_modes(','.join(DEFAULT_MODES))
    assert [(m.name, m.train, m.amp, m.precision) for m in modes] == [
        ('forward', False, None, 'fp32'), ('train', True, None, 'fp32'),
        ('forward-bf16', False, 'bf16', 'autocast bf16'),
        ('train-bf16', True, 'bf16', 'autocast bf16')]
    # with --amp bf16 the plain modes are the bf16 ones already
    assert [m.name for m in bm.parse_modes(DEFAULT_MODES, amp='bf16')] == ['forward', 'train']
    assert bm.parse_modes('train-fp16')[0].key == 'train_fp16'
    for bad in ('backward', 'forward-int8', ' , '):
        with pytest.raises(ValueError):
            bm.parse_modes(bad)


def test_zero_stochastic_layers_disables_drop_path():
    from mmcv.cnn.bricks.drop import DropPath
    model = nn.Sequential(DropPath(0.3), nn.Dropout(0.1), nn.Identity())
    assert build.zero_stochastic_layers(model) == 2
    assert model[0].drop_prob == 0.0 and model[1].p == 0.0
    cfg = build.prepare_backbone_cfg(dict(type='X', drop_path_rate=0.2,
                                          init_cfg=dict(type='Pretrained')), with_cp=True)
    assert cfg == dict(type='X', drop_path_rate=0.0, with_cp=True)


def test_make_spec_sets_drop_path_rate_only_where_the_signature_takes_it(standin):
    from mmhybrid.registry import MODELS

    @MODELS.register_module(name='_AnalysisToolsKwargsOnly', force=True)
    class KwargsOnly(nn.Module):
        def __init__(self, width=4, **kwargs):
            super().__init__()

    try:
        spec = bm.make_spec(dict(type='_AnalysisToolsStandIn'), shape=[32])
        assert spec['backbone_cfg'] == dict(type='_AnalysisToolsStandIn', drop_path_rate=0.0)
        assert spec['shape'] == [32, 32]
        spec = bm.make_spec(dict(type='_AnalysisToolsKwargsOnly'))
        assert spec['backbone_cfg'] == dict(type='_AnalysisToolsKwargsOnly')
        assert build.accepts_argument(dict(type='CrossFormer'), 'drop_path_rate')
        assert not build.accepts_argument(dict(type='_NotRegistered'), 'drop_path_rate')
    finally:
        MODELS._module_dict.pop('_AnalysisToolsKwargsOnly', None)


def test_gemm_rate_is_positive_gflops():
    assert 0.1 < measure.gemm_rate('cpu', (256, 128, 64), reps=2) < 1e6
    assert 0.1 < measure.gemm_rate('cpu', (128, 128, 128), torch.bfloat16, reps=1) < 1e6


def test_peak_gemm_rate_is_the_best_shape_of_the_precision(monkeypatch):
    calls = []

    def fake_rate(device, shape, dtype, reps):
        calls.append((tuple(shape), dtype))
        return float(sum(shape)) * (10 if dtype == torch.bfloat16 else 1)

    monkeypatch.setattr(measure, 'gemm_rate', fake_rate)
    monkeypatch.setitem(measure.GEMM_SHAPES, 'cpu', ((64, 64, 64), (512, 32, 32), (96, 96, 96)))
    assert measure.peak_gemm_rate('cpu') == dict(gflops_per_s=576.0, shape='512x32x32')
    assert [dtype for _shape, dtype in calls] == [torch.float32] * 3
    assert measure.peak_gemm_rate('cpu', 'bf16', shapes=[(8, 8, 8)])['gflops_per_s'] == 240.0
    with pytest.raises(ValueError):
        measure.peak_gemm_rate('cpu', 'int8')
    assert bm.mode_precisions(bm.parse_modes('forward,train-bf16,forward-bf16,train')) == \
        ['fp32', 'bf16']
    assert bm.mode_precisions(bm.parse_modes('forward', amp='fp16')) == ['fp16']


def test_cpu_peak_memory_measures_each_mode_not_the_parent_peak(standin_dir, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', str(standin_dir))
    # raise this process's high-water mark well above what the child's step needs (a
    # child's ru_maxrss starts at the parent's peak on Linux, so it alone would see this)
    big = torch.ones(384 * 2**20)  # 1.5 GiB
    del big
    spec = dict(backbone_cfg=dict(type='_AnalysisToolsStandIn', alloc_mib=128),
                default_scope=None, source='backbone', import_modules=['analysis_tools_standin'],
                shape=[32, 32], batch=1, in_channels=3, device='cpu', threads=1, amp=None)
    mem = bm.cpu_peak_memory(spec, bm.parse_modes(DEFAULT_MODES))
    assert list(mem) == list(DEFAULT_MODES)
    for mode, m in mem.items():
        inc_gib = m['increase_bytes'] / 2**30
        assert not m['lower_bound'], mode
        # every step holds 2 x 128 MiB at its peak (ones, and its product), also the
        # steps measured after another one in the same process
        assert 0.2 < inc_gib < 0.6, (mode, m)


@pytest.fixture(scope='module')
def tiny_results():
    """run_benchmark of a tiny CrossFormer at two shapes, all default modes, no memory."""
    modes = bm.parse_modes(DEFAULT_MODES)
    peaks = bm.measure_peaks('cpu', ['fp32'], shapes=[(256, 256, 256)], reps=1)
    cfg = dict(type='CrossFormer', arch=SMALL_ARCH['CrossFormer'])
    # the bf16 peak is not in ``peaks``: run_benchmark measures it (at these shapes)
    return [bm.run_benchmark(bm.make_spec(cfg, shape=shape, threads=1), modes, warmup=0,
                             iters=1, memory=False, peaks=peaks, gemm_shapes=[(128, 256, 64)],
                             gemm_reps=1)
            for shape in ([64, 64], [64, 96])]


def test_run_benchmark_times_every_mode_of_a_tiny_backbone(tiny_results):
    res = tiny_results[0]
    assert res['label'] == 'CrossFormer (custom arch)'
    assert res['backbone_cfg']['drop_path_rate'] == 0.0
    assert list(res['modes']) == list(DEFAULT_MODES)
    forward, train = res['modes']['forward'], res['modes']['train']
    assert (forward['kind'], train['kind']) == ('forward', 'train')
    assert res['modes']['train-bf16']['precision'] == 'autocast bf16'
    # a training step counts forward and backward (weight and activation gradients)
    assert train['gflops'] == res['train_gflops'] > 2 * forward['gflops'] > 0
    assert res['modes']['forward-bf16']['gflops'] == forward['gflops']
    assert (res['peak_fp32_gemm'], res['peak_bf16_gemm']) == ('256x256x256', '128x256x64')
    for name, m in res['modes'].items():
        assert m['ms_median'] > 0 and m['images_per_s'] > 0 and m['efficiency_pct'] > 0
        assert res[f'{name.replace("-", "_")}_ms_median'] == m['ms_median']
        assert 'peak_mem_gib' not in m
        # each mode's efficiency is against the peak of its own precision
        assert m['peak_precision'] == ('bf16' if name.endswith('-bf16') else 'fp32')
        assert m['peak_gflops_per_s'] == res[f'peak_{m["peak_precision"]}_gflops_per_s']
        assert m['efficiency_pct'] == pytest.approx(
            100.0 * m['gflops'] / (m['ms_median'] / 1000.0) / m['peak_gflops_per_s'])
    assert res['forward_ms_median'] == forward['ms_median']
    assert res['fwd_bwd_ms_median'] == train['ms_median']
    assert 'fwd_bwd_peak_mem_gib' not in res
    text = report.benchmark_table(res)
    assert 'forward-bf16 median' in text and 'fwd+bwd FLOPs' in text
    assert 'fp32 peak GEMM rate' in text and 'bf16 peak GEMM rate' in text
    assert '(FLOPs / forward time / fp32 peak GEMM rate)' in text


def test_markdown_report_names_machine_and_command_and_has_a_row_per_run_and_mode(
        tiny_results):
    argv = ['--backbone', 'CrossFormer', '--arch', 'small', '--backbone-cfg', "dict(a='b c')"]
    command = report.command_line(str(BENCHMARK), argv)  # relative to the cwd, quoted
    assert shlex.split(command) == ['python', 'tools/analysis/benchmark.py'] + argv
    text = report.markdown_report(tiny_results, command, machine='Some CPU, 2 cores')
    lines = text.splitlines()
    assert lines[0] == f'Measured on Some CPU, 2 cores, with `{command}`:'
    header = [c.strip() for c in lines[2].strip('|').split('|')]
    assert header[:4] == ['backbone', 'input', 'mode', 'precision']
    assert {'median ms', 'images/s', 'efficiency', 'peak memory'} <= set(header)
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[4:]
            if line.startswith('|')]
    assert [(r[1], r[2]) for r in rows] == [(shape, mode) for shape in ('64x64', '64x96')
                                            for mode in DEFAULT_MODES]
    assert all(len(r) == len(header) and r[-1] == 'n/a' for r in rows)  # no memory measured
    assert 'Efficiency = GFLOPs / median time / peak GEMM rate of the mode\'s precision' in text
    # the rates it divided by (one fp32 peak shared by both runs; each run measured its bf16 one)
    assert f'fp32 {tiny_results[0]["peak_fp32_gflops_per_s"]:.1f}, bf16 ' in text
    assert all(f'{r["peak_bf16_gflops_per_s"]:.1f}' in text for r in tiny_results)
    # the default machine line: CPU model, cores, torch threads and version, device
    machine = report.describe_machine('cpu')
    assert f'{os.cpu_count()} cores' in machine and f'torch {torch.__version__}' in machine


def _model_args(*argv):
    parser = argparse.ArgumentParser()
    cli.add_model_args(parser, config_positional=False, multiple=True)
    args = parser.parse_args(argv)
    cli.check_model_args(parser, args, '--config', multiple=True)
    return cli.backbone_cfgs_from_args(args)


def test_benchmark_model_args_pair_each_arch_with_its_backbone():
    assert _model_args('--backbone', 'CrossFormer', '--arch', 'small', '--backbone', 'CvT',
                       '--arch', '13') == [dict(type='CrossFormer', arch='small'),
                                           dict(type='CvT', arch='13')]
    # one backbone: --arch applies to it, --backbone-cfg too (as before)
    assert _model_args('--backbone-cfg', "dict(type='CvT')", '--arch', '21') == [
        dict(type='CvT', arch='21')]
    assert _model_args('--backbone-cfg', "dict(type='CvT', arch='13')", '--backbone', 'CvT',
                       '--arch', '21', '--backbone-args', 'out_indices=(2,)') == [
        dict(type='CvT', arch='13', out_indices=(2,)),
        dict(type='CvT', arch='21', out_indices=(2,))]
    for argv in (['--backbone', 'A', '--backbone', 'B', '--arch', 'x'],
                 ['--backbone', 'A', '--arch', 'x', '--arch', 'y'],
                 ['--config', 'c.py', '--backbone', 'A'], []):
        with pytest.raises(SystemExit):
            _model_args(*argv)


# --------------------------------------------------------------------------------------
# the project's CrossFormer (when present)
# --------------------------------------------------------------------------------------

HAS_CROSSFORMER = (ROOT / 'mmhybrid' / 'models' / 'crossformer.py').exists()
RETINANET_CFG = ROOT / 'configs' / 'retinanet_crossformer_s_coco.py'


@pytest.mark.skipif(not HAS_CROSSFORMER, reason='mmhybrid/models/crossformer.py not written yet')
def test_get_flops_crossformer_s_matches_paper_params_and_flops():
    model = build.build_backbone(dict(type='CrossFormer', arch='small'))
    res = flops.analyze_model(model, [224], is_backbone=True)
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
