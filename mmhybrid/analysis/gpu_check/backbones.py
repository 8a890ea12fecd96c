"""Section ``backbones``: each family's training step (forward, mean of the maps, backward) in fp32
and bf16 autocast: ms/iter (median after warm-up), peak memory of a step (CUDA only), forward
GFLOPs; next to the official implementations (``--official``) and to timm's peers of equal FLOPs.
Each family's step runs once more with SDPA's math kernel disabled, which shows that every
attention call found a fused kernel."""
import importlib.util
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .. import measure
from ..build import zero_stochastic_layers
from ..flops import count_flops
from .common import GpuCheckOptions, Targets, error_text, free_memory, print_row

#: timm peers at equal FLOPs: (row name, timm model, name of the family row it is compared with)
PEERS = [('timm Swin-T', 'swin_tiny_patch4_window7_224', 'CrossFormer-S'),
         ('timm ConvNeXt-T', 'convnext_tiny', 'Conv2Former-T')]
#: the input of a step: 800 x 1216 (96 x 128 with ``tiny``)
SHAPE, TINY_SHAPE = (800, 1216), (96, 128)


def family_rows() -> List[Tuple[str, dict, Optional[str]]]:
    """One row per registered backbone family, from its class's ``benchmark``: (row name,
    backbone config, name of the official model in the side-by-side ``bench.py`` or None)."""
    from ...models.base import registered_families
    return [(cls.benchmark['name'], dict(type=f'mmhybrid.{cls.__name__}', **cls.benchmark['cfg']),
             cls.benchmark['official']) for cls in registered_families().values()]


def fused_only():
    """SDPA restricted to its fused kernels: a call that would need the math kernel raises."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.CUDNN_ATTENTION])


def _measure_precision(row: dict, model: nn.Module, x: torch.Tensor, amp: Optional[str],
                       options: GpuCheckOptions, check_fused: bool) -> None:
    """Time the training step in one precision into ``row``; its peak memory on CUDA; with
    ``check_fused``, whether it runs with SDPA's fused kernels only."""
    key = amp or 'fp32'
    try:
        times = measure.time_step(model, x, True, options.warmup, options.iters, amp)
        row[f'train_{key}_ms'] = statistics.median(times)
        if measure.is_cuda(options.device):
            mem = measure.cuda_step_memory(measure.make_step(model, x, True, amp), options.device)
            row[f'train_{key}_peak_gib'] = mem['increase_bytes'] / measure.GIB
            model.zero_grad(set_to_none=True)
        if check_fused:
            with fused_only():
                measure.make_step(model, x, True, amp)()
            model.zero_grad(set_to_none=True)
            row[f'fused_{key}'] = 'yes'
    except Exception as err:  # noqa: BLE001  (reported in the row, the check goes on)
        if check_fused and f'train_{key}_ms' in row:
            row[f'fused_{key}'] = 'NO: ' + error_text(err)[:150]
        else:
            row[f'train_{key}_error'] = error_text(err)
        model.zero_grad(set_to_none=True)


def measure_backbone(name: str, build: Callable[[], nn.Module], options: GpuCheckOptions,
                     check_fused: bool = False) -> dict:
    """One backbone's row: forward GFLOPs, then the training step in fp32 and bf16 autocast.

    Args:
        name: the row name.
        build: builds the backbone (on the CPU).
        options: the check's options.
        check_fused: also check that every attention call has a fused SDPA kernel.
    """
    row = dict(model=name)
    model = None
    try:
        model = build().to(options.device)
        zero_stochastic_layers(model)
        x = torch.randn(options.batch, 3, *(TINY_SHAPE if options.tiny else SHAPE),
                        device=options.device)
        model.eval()
        with torch.no_grad():
            row['gflops'] = count_flops(lambda: model(x))['total'] / 1e9
        for amp in (None, 'bf16'):
            _measure_precision(row, model, x, amp, options, check_fused)
    except Exception as err:  # noqa: BLE001
        row['error'] = error_text(err)
    model = None   # freed before the next model is measured
    free_memory(options.device)
    print_row('backbones', row)
    return row


def ours(cfg: dict) -> Callable[[], nn.Module]:
    """A builder of our backbone of ``cfg`` (drop path 0)."""
    def build():
        from ...registry import MODELS
        return MODELS.build(dict(cfg, drop_path_rate=0.0))
    return build


def timm_peer(model_name: str) -> Callable[[], nn.Module]:
    """A builder of a timm model's feature maps (random weights)."""
    def build():
        import timm
        extra = dict(strict_img_size=False) if 'swin' in model_name else {}
        return timm.create_model(model_name, pretrained=False, features_only=True, **extra)
    return build


def official_builders(folder: str) -> Dict[str, Callable[[], nn.Module]]:
    """name -> builder of the official implementations, from the side-by-side ``bench.py`` in
    ``folder`` (a file outside the package, imported from its path)."""
    spec = importlib.util.spec_from_file_location('mmhybrid_side_by_side_bench',
                                                  osp.join(folder, 'bench.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return {name: builder for name, _family, builder, _ in bench.MODELS
            if name.startswith('official/') and callable(builder)}


def check_backbones(options: GpuCheckOptions) -> List[dict]:
    """The ``backbones`` section: every family (``kind`` 'ours'), its official implementation
    where ``options.official`` has it ('official'), and the timm peers ('peer')."""
    official = official_builders(options.official) if options.official else {}
    rows = []
    for name, cfg, official_name in family_rows():
        rows.append(dict(measure_backbone(name, ours(cfg), options, check_fused=True),
                         family=name, kind='ours'))
        if official_name in official:
            rows.append(dict(measure_backbone(f'{name} official', official[official_name], options),
                             family=name, kind='official'))
    for name, model_name, family in PEERS:
        rows.append(dict(measure_backbone(name, timm_peer(model_name), options),
                         family=family, kind='peer'))
    return rows


def _met(ok: bool) -> str:
    return 'met' if ok else 'MISSED'


def _official_lines(name: str, ours_row: dict, off: dict, targets: Targets) -> List[str]:
    lines = []
    if ours_row.get('train_bf16_ms') and off.get('train_fp32_ms'):
        ratio = off['train_fp32_ms'] / ours_row['train_bf16_ms']
        lines.append(f'{name}: bf16 throughput {ratio:.2f}x the official fp32 one '
                     f'({_met(ratio >= targets.bf16_speedup)}, target {targets.bf16_speedup}x)')
    for key in ('fp32', 'bf16'):
        a, b = ours_row.get(f'train_{key}_peak_gib'), off.get(f'train_{key}_peak_gib')
        if a is not None and b is not None:
            limit = '' if targets.memory_ratio == 1.0 else f', target {targets.memory_ratio}x'
            lines.append(f'{name}: {key} peak memory {a:.2f} GiB vs official {b:.2f} GiB '
                         f'({_met(a <= targets.memory_ratio * b)}{limit})')
    return lines


def backbone_targets(rows: List[dict], targets: Optional[Targets] = None) -> List[str]:
    """The targets (:class:`Targets`) from the measured rows, one line each: bf16 throughput
    against the official fp32 one, peak memory against the official one's, ms per GFLOP
    against the timm peer's.

    Args:
        rows: the ``backbones`` section's rows.
        targets: the targets (default :class:`Targets`' defaults).
    """
    targets = targets or Targets()
    by = {(r['family'], r['kind']): r for r in rows}
    lines = []
    for name in dict.fromkeys(r['family'] for r in rows):
        ours_row, off = by.get((name, 'ours')), by.get((name, 'official'))
        if ours_row and off:
            lines += _official_lines(name, ours_row, off, targets)
    for peer, _model, family in PEERS:
        a, b = by.get((family, 'ours')), by.get((family, 'peer'))
        if a and b and all(r.get(k) for r in (a, b) for k in ('train_bf16_ms', 'gflops')):
            ratio = (a['train_bf16_ms'] / a['gflops']) / (b['train_bf16_ms'] / b['gflops'])
            lines.append(f'{family}: bf16 ms per GFLOP {ratio:.2f}x {peer}\'s '
                         f'({_met(ratio <= targets.peer_ms_per_gflop)}, target within '
                         f'{targets.peer_ms_per_gflop}x)')
    return lines
