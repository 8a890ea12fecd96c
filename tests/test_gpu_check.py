"""tools/analysis/gpu_check.py and mmhybrid.analysis.gpu_check: its CPU mode (``--device cpu
--tiny``) runs every section, and without CUDA its GPU mode says so and exits cleanly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from family_archs import SMALL_ARCH
from mmhybrid.analysis import gpu_check
from mmhybrid.analysis.gpu_check.mmcv_ops import compare, focal_reference
from mmhybrid.models.base import registered_families

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'analysis' / 'gpu_check.py'


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_tiny_mode_runs_every_section_and_writes_the_summary(tmp_path):
    out = tmp_path / 'check'
    proc = _run('--device', 'cpu', '--tiny', '--out', str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / 'results.json').read_text())
    results = report['results']
    assert report['env']['device'] == 'cpu' and report['env']['tiny'] is True

    ops = {r['op']: r for r in results['ops']}
    assert set(ops) == {'nms', 'batched_nms', 'roi_align (+backward)', 'sigmoid_focal_loss (+backward)'}
    assert all(r['ok'] for r in ops.values())
    for name in ('nms', 'batched_nms', 'roi_align (+backward)'):   # mmcv's CPU kernels against torchvision
        assert ops[name]['cpu_vs_reference'] <= 1e-4, ops[name]
        assert ops[name]['bf16'].startswith('refused'), ops[name]   # why --amp runs them in fp32

    ours = [r for r in results['backbones'] if r['kind'] == 'ours']
    assert len(ours) == len(SMALL_ARCH)
    for r in ours:
        assert r['train_fp32_ms'] > 0 and r['train_bf16_ms'] > 0 and r['gflops'] > 0, r
        assert r['fused_fp32'] == r['fused_bf16'] == 'yes', r
    assert {r['model'] for r in results['backbones'] if r['kind'] == 'peer'} == {'timm Swin-T', 'timm ConvNeXt-T'}

    detectors = results['detectors']
    assert [(r['model'].split()[0], r['precision']) for r in detectors] == [
        (task, precision) for task in ('RetinaNet', 'Mask', 'UperNet') for precision in ('fp32', 'AMP')]
    assert all('error' not in r and r['s_per_iter'] > 0 and r['loss'] > 0 for r in detectors), detectors

    (dist,) = results['dist']
    assert dist['backend'] == 'gloo' and dist['world_size'] == 1, dist
    assert dist['bbox_mAP'] is not None and 0.0 <= dist['bbox_mAP'] <= 1.0

    summary = (out / 'summary.md').read_text()
    for text in ('| nms |', '| CrossFormer-S |', '| RetinaNet CrossFormer-S |', 'backend gloo',
                 'official implementations not compared'):
        assert text in summary, text


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_mode_without_a_gpu_says_so_and_exits_cleanly(tmp_path):
    proc = _run('--out', str(tmp_path / 'check'), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'skipped: no CUDA device here' in proc.stdout and '--device cpu --tiny' in proc.stdout
    assert not (tmp_path / 'check').exists()


def test_official_folder_without_its_benchmark_is_refused_in_one_line(tmp_path):
    proc = _run('--device', 'cpu', '--official', str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert f'--official {tmp_path}: no bench.py there' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_every_family_is_checked():
    assert {cfg['type'].split('.')[-1] for _name, cfg, _official in gpu_check.family_rows()} == set(SMALL_ARCH)


def test_every_registered_family_has_a_row_from_its_benchmark_declaration():
    rows = {cfg['type']: (name, cfg, official) for name, cfg, official in gpu_check.family_rows()}
    families = registered_families()
    assert families and set(rows) == {f'mmhybrid.{cls.__name__}' for cls in families.values()}
    for cls in families.values():
        name, cfg, official = rows[f'mmhybrid.{cls.__name__}']
        assert name == cls.benchmark['name'] and official == cls.benchmark['official']
        assert cfg == dict(type=f'mmhybrid.{cls.__name__}', **cls.benchmark['cfg'])
    names = [name for name, _cfg, _official in rows.values()]
    assert len(set(names)) == len(names)
    assert {family for _peer, _model, family in gpu_check.PEERS} <= set(names)   # each peer has its family


def test_targets_are_parameters_of_the_report():
    rows = [dict(family='A', kind='ours', train_bf16_ms=10.0, train_fp32_peak_gib=1.0, gflops=5.0),
            dict(family='A', kind='official', train_fp32_ms=12.0, train_fp32_peak_gib=0.9)]
    assert gpu_check.backbone_targets(rows) == [
        'A: bf16 throughput 1.20x the official fp32 one (MISSED, target 1.3x)',
        'A: fp32 peak memory 1.00 GiB vs official 0.90 GiB (MISSED)']
    lenient = gpu_check.Targets(bf16_speedup=1.1, memory_ratio=1.2)
    assert gpu_check.backbone_targets(rows, lenient) == [
        'A: bf16 throughput 1.20x the official fp32 one (met, target 1.1x)',
        'A: fp32 peak memory 1.00 GiB vs official 0.90 GiB (met, target 1.2x)']


def test_focal_loss_reference_is_mmdets_pytorch_focal_loss():
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=gen)
    labels = torch.randint(0, 6, (64,), generator=gen)   # 5 = background
    onehot = torch.nn.functional.one_hot(labels, 6)[:, :5].float()
    expected = py_sigmoid_focal_loss(logits, onehot, gamma=2.0, alpha=0.25, reduction='sum')
    torch.testing.assert_close(focal_reference(logits, labels), expected)


def test_compare_tells_equal_indices_and_close_values_from_different_ones():
    keep = torch.tensor([3, 1, 2])
    assert compare([keep], [keep.clone()]) == 0.0
    assert compare([keep], [torch.tensor([3, 2, 1])]) == 1.0
    assert compare([keep], [keep[:2]]) == float('inf')
    x = torch.tensor([1.0, -2.0])
    assert compare([x], [x + torch.tensor([0.0, 0.02])]) == pytest.approx(0.02 / 1.98, rel=1e-3)


def test_a_failed_check_or_an_unfused_attention_fails_the_run():
    assert gpu_check.failed({'ops': [dict(op='nms', ok=True)], 'backbones': [dict(model='A', fused_fp32='yes')]}) == []
    assert gpu_check.failed({'ops': [dict(op='nms', ok=False)]}) == ['ops: nms']
    assert gpu_check.failed({'backbones': [dict(model='A', fused_bf16='NO: math kernel')]}) == ['backbones: A']
    assert gpu_check.failed({'detectors': [dict(model='B', error='x')]}) == ['detectors: B']


def test_quick_start_map_is_read_from_the_last_validation_line():
    from mmhybrid.analysis.gpu_check.dist import last_bbox_map
    log = ('Epoch(val) [1][1/1]    coco/bbox_mAP: 0.0100  coco/bbox_mAP_50: 0.0300\n'
           'Epoch(val) [2][1/1]    coco/bbox_mAP: 0.2500  coco/bbox_mAP_50: 0.4000\n')
    assert last_bbox_map(log) == 0.25
    assert last_bbox_map('no validation') is None
