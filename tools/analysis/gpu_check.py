"""The GPU check: mmcv's CUDA ops, every backbone family's training step, the detectors'
optimizer steps, an NCCL launch and the quick start, in one run, with a markdown summary.

    python tools/analysis/gpu_check.py --official ../shared/bench --out work_dirs/gpu_check
    python tools/analysis/gpu_check.py --device cpu --tiny --out /tmp/gpu_check   # the CPU mode

Sections (``--sections``, default all):

1. ``ops``: mmcv's compiled ops that the configs run (nms, batched_nms, roi_align with
   its backward, sigmoid_focal_loss with its backward) on the device against their CPU
   kernels, and every result against a plain PyTorch / torchvision reference; then each
   op with bf16 inputs (refused, or how far from fp32), which is why ``--amp`` runs
   them in fp32 (``mmhybrid/ops.py``).
2. ``backbones``: each family's training step (forward, mean of the maps, backward) at
   batch 2 x 3 x 800 x 1216 in fp32 and bf16 autocast: ms/iter (CUDA events, median
   after warm-up), peak memory of a step (``max_memory_allocated``, CUDA only), forward
   GFLOPs; next to the official implementations when ``--official DIR`` names a folder
   holding their side-by-side ``bench.py`` (with ``official/``), and next to timm's Swin-T
   and ConvNeXt-T. Each family's step is run once more with SDPA's math kernel disabled,
   which shows that every attention call found a fused kernel.
3. ``detectors``: RetinaNet, Mask R-CNN (COCO, 2 x 800 x 1333) and UperNet (ADE20K,
   2 x 512 x 512) with CrossFormer-S, the configs as ``tools/train.py [--amp]`` builds
   them: optimizer steps in fp32 and AMP, s/iter and peak memory.
4. ``dist``: the quick start trained through ``tools/dist_train.sh CONFIG 1`` (NCCL on a
   GPU, gloo on the CPU), its backend, wall time and bbox mAP.

``--tiny`` (the CPU mode the test suite runs) keeps every step and code path at toy
sizes: batch 1 at 96 x 128 for the backbones, 2 x 128 x 160 images for the detectors,
no warm-up and 1 timed iteration, 1 epoch of the quick start on 16 images.

Writes ``OUT/summary.md`` (for ``docs/benchmarks.md``) and ``OUT/results.json``; exits 1
when an op disagrees with its reference or a step fails, 0 otherwise (targets missed are
reported, not failures). Without CUDA, ``--device cuda`` prints why and exits 0.
"""
import argparse
import gc
import importlib.util
import json
import os
import os.path as osp
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from argparse import Namespace

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch  # noqa: E402

GIB = 1024 ** 3
SECTIONS = ('ops', 'backbones', 'detectors', 'dist')

#: (row name, backbone config, name of the official model in ``bench.py``'s MODELS or None)
FAMILIES = [
    ('CrossFormer-S', dict(type='mmhybrid.CrossFormer', arch='small'), 'official/crossformer_s'),
    ('CrossFormer++-S', dict(type='mmhybrid.CrossFormerPP', arch='small'), None),
    ('Conv2Former-T', dict(type='mmhybrid.Conv2Former', arch='tiny', out_norms=True), 'official/conv2former_t'),
    ('Conformer-S/16', dict(type='mmhybrid.Conformer', arch='small', norm_eval=True, frozen_stages=0),
     'official/conformer_s_p16'),
    ('CvT-13', dict(type='mmhybrid.CvT', arch='13', norm_eval=True), 'official/cvt_13'),
    ('CloFormer-S', dict(type='mmhybrid.CloFormer', arch='s'), 'official/cloformer_s'),
]
#: timm peers at equal FLOPs: (row name, timm model, our family it is compared with)
PEERS = [('timm Swin-T', 'swin_tiny_patch4_window7_224', 'CrossFormer-S'),
         ('timm ConvNeXt-T', 'convnext_tiny', 'Conv2Former-T')]
DETECTORS = [('RetinaNet CrossFormer-S', 'configs/retinanet_crossformer_s_coco.py'),
             ('Mask R-CNN CrossFormer-S', 'configs/mask_rcnn_crossformer_s_coco.py'),
             ('UperNet CrossFormer-S', 'configs/upernet_crossformer_s_ade20k.py')]
QUICKSTART = 'configs/quickstart/retinanet_crossformer_toy.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', help='cuda (default), cuda:N or cpu')
    p.add_argument('--tiny', action='store_true', help='toy sizes: the CPU mode (see above)')
    p.add_argument('--official', metavar='DIR',
                   help='folder of the side-by-side bench.py and its official/ files (../shared/bench)')
    p.add_argument('--out', default='work_dirs/gpu_check', help='folder for summary.md and results.json')
    p.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated subset of {SECTIONS}')
    p.add_argument('--data', default=None,
                   help='folder holding toy_coco/ for the quick start (written there if missing; '
                        'default OUT/data)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps (default 3, --tiny 0)')
    p.add_argument('--iters', type=int, default=None, help='timed steps (default 10, --tiny 1)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch\'s)')
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f'--sections: unknown {unknown}; choose from {",".join(SECTIONS)}')
    if args.official and not osp.isfile(osp.join(args.official, 'bench.py')):
        p.error(f'--official {args.official}: no bench.py there (the side-by-side benchmark folder, '
                'e.g. ../shared/bench, holding bench.py and official/)')
    args.warmup = (0 if args.tiny else 3) if args.warmup is None else args.warmup
    args.iters = (1 if args.tiny else 10) if args.iters is None else args.iters
    return args


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def is_cuda(device) -> bool:
    return torch.device(device).type == 'cuda'


def sync(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / GIB if is_cuda(device) else None


def load_module(name, path):
    """Import a file that is not part of a package (the tools, the side-by-side bench.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_text(err: BaseException) -> str:
    return f'{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ""}'


def fmt(value, spec='.1f', none='-'):
    return none if value is None else format(value, spec)


# ---------------------------------------------------------------------------------------------
# 1. mmcv ops
# ---------------------------------------------------------------------------------------------

def random_boxes(n, size, gen):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 4 + 2
    return torch.cat([xy, xy + wh], 1)


def focal_reference(pred, target, gamma=2.0, alpha=0.25):
    """Sigmoid focal loss (summed) in plain PyTorch: the formula of RetinaNet's paper, one-hot targets
    from class indices (index ``num_classes`` = background)."""
    onehot = torch.nn.functional.one_hot(target, pred.shape[1] + 1)[:, :-1].to(pred.dtype)
    p = pred.sigmoid()
    pt = p * onehot + (1 - p) * (1 - onehot)
    weight = (alpha * onehot + (1 - alpha) * (1 - onehot)) * (1 - pt).pow(gamma)
    return (torch.nn.functional.binary_cross_entropy_with_logits(pred, onehot, reduction='none') * weight).sum()


def op_cases(tiny):
    """name -> (function of a device, a dtype and a flag 'with gradients' giving the outputs to
    compare, reference outputs on the CPU in fp32 or None)."""
    import torchvision
    from mmcv.ops import batched_nms, nms, roi_align, sigmoid_focal_loss
    gen = torch.Generator().manual_seed(0)
    n = 300 if tiny else 3000
    boxes, scores = random_boxes(n, 800.0, gen), torch.rand(n, generator=gen)
    classes = torch.randint(0, 10, (n,), generator=gen)
    feat = torch.randn(2, 16 if tiny else 256, 50, 76, generator=gen)
    k = 64 if tiny else 512
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=gen).float(), random_boxes(k, 300.0, gen)], 1)
    grad_out = torch.randn(k, feat.shape[1], 7, 7, generator=gen)
    logits = torch.randn(2000 if tiny else 20000, 80, generator=gen)
    labels = torch.randint(0, 81, (logits.shape[0],), generator=gen)

    def run_nms(device, dtype):
        return [nms(boxes.to(device, dtype), scores.to(device, dtype), 0.5)[1]]

    def run_batched_nms(device, dtype):
        return [batched_nms(boxes.to(device, dtype), scores.to(device, dtype), classes.to(device),
                            dict(type='nms', iou_threshold=0.5))[1]]

    def run_roi_align(device, dtype):
        x = feat.to(device, dtype).requires_grad_()
        out = roi_align(x, rois.to(device, dtype), (7, 7), 1 / 16, 0, 'avg', True)
        out.backward(grad_out.to(device, dtype))
        return [out, x.grad]

    def run_focal(device, dtype):
        x = logits.to(device, dtype).requires_grad_()
        loss = sigmoid_focal_loss(x, labels.to(device), 2.0, 0.25, None, 'sum')
        loss.backward()
        return [loss, x.grad]

    def ref_roi_align():
        x = feat.clone().requires_grad_()
        out = torchvision.ops.roi_align(x, rois, (7, 7), 1 / 16, 0, True)
        out.backward(grad_out)
        return [out, x.grad]

    def ref_focal():
        x = logits.clone().requires_grad_()
        loss = focal_reference(x, labels)
        loss.backward()
        return [loss, x.grad]

    return {
        'nms': (run_nms, lambda: [torchvision.ops.nms(boxes, scores, 0.5)]),
        'batched_nms': (run_batched_nms, lambda: [torchvision.ops.batched_nms(boxes, scores, classes, 0.5)]),
        'roi_align (+backward)': (run_roi_align, ref_roi_align),
        'sigmoid_focal_loss (+backward)': (run_focal, ref_focal),
    }


def compare(outs, refs):
    """Max relative difference of float outputs, or 0/1 for index outputs (equal or not)."""
    worst = 0.0
    for a, b in zip(outs, refs):
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.shape != b.shape:
            return float('inf')
        if not a.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, b) else 1.0)
            continue
        a, b = a.double(), b.double()
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
    return worst


def bf16_behaviour(run, device, ref) -> str:
    """Whether the op takes bf16 inputs on ``device``, and how far its result is from the fp32 reference."""
    try:
        return f'runs; {compare(run(device, torch.bfloat16), ref):.1e} from the fp32 reference'
    except (RuntimeError, NotImplementedError) as err:
        return 'refused: ' + error_text(err)[:120]


def check_ops(args):
    from mmcv.ops import get_compiling_cuda_version
    rows = []
    tol = 1e-4
    if is_cuda(args.device) and get_compiling_cuda_version() == 'not available':
        return [dict(op='all', ok=False, error='mmcv was built without CUDA ops: rebuild it with '
                     '`rm .venv/.stamp-mmcv && FORCE_CUDA=1 make install`')]
    for name, (run, reference) in op_cases(args.tiny).items():
        row = dict(op=name, ok=True)
        try:
            ref = reference()
            try:
                cpu = run('cpu', torch.float32)
            except RuntimeError as err:   # mmcv has no CPU kernel of the focal loss
                if 'implementation for device cpu not found' not in str(err):
                    raise
                cpu, row['cpu'] = None, 'no CPU kernel (mmdet runs its PyTorch version there)'
            if cpu is not None:
                row['cpu_vs_reference'] = compare(cpu, ref)
            dev = run(args.device, torch.float32) if is_cuda(args.device) else cpu
            if dev is not None and is_cuda(args.device):
                row['device_vs_reference'] = compare(dev, ref)
                if cpu is not None:
                    row['device_vs_cpu'] = compare(dev, cpu)
            row['ok'] = all(row.get(k, 0.0) <= tol for k in ('cpu_vs_reference', 'device_vs_reference',
                                                             'device_vs_cpu'))
            row['bf16'] = '-' if dev is None else bf16_behaviour(run, args.device, ref)
        except Exception as err:  # noqa: BLE001  (reported, the check goes on)
            row.update(ok=False, error=error_text(err), traceback=traceback.format_exc())
        rows.append(row)
        print(f'[ops] {name}: {"ok" if row["ok"] else "FAILED"} {json.dumps({k: v for k, v in row.items() if k not in ("op", "traceback")})}', flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# 2. backbones
# ---------------------------------------------------------------------------------------------

def fused_only():
    """SDPA restricted to its fused kernels: a call that would need the math kernel raises."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def measure_backbone(name, build, args, shape, check_fused=False):
    from mmhybrid.analysis import count_flops
    from mmhybrid.analysis.build import zero_stochastic_layers
    from mmhybrid.analysis.measure import make_step, time_step
    row = dict(model=name)
    model = None
    try:
        model = build().to(args.device)
        zero_stochastic_layers(model)
        x = torch.randn(args.batch, 3, *shape, device=args.device)
        model.eval()
        with torch.no_grad():
            row['gflops'] = count_flops(lambda: model(x))['total'] / 1e9
        for amp in (None, 'bf16'):
            key = amp or 'fp32'
            try:
                times = time_step(model, x, True, args.warmup, args.iters, amp)
                row[f'train_{key}_ms'] = statistics.median(times)
                if is_cuda(args.device):
                    reset_peak(args.device)
                    base = torch.cuda.memory_allocated(args.device)
                    make_step(model, x, True, amp)()
                    sync(args.device)
                    row[f'train_{key}_peak_gib'] = (torch.cuda.max_memory_allocated(args.device) - base) / GIB
                    model.zero_grad(set_to_none=True)
                if check_fused:
                    with fused_only():
                        make_step(model, x, True, amp)()
                    model.zero_grad(set_to_none=True)
                    row[f'fused_{key}'] = 'yes'
            except Exception as err:  # noqa: BLE001
                if check_fused and f'train_{key}_ms' in row:
                    row[f'fused_{key}'] = 'NO: ' + error_text(err)[:150]
                else:
                    row[f'train_{key}_error'] = error_text(err)
                model.zero_grad(set_to_none=True)
    except Exception as err:  # noqa: BLE001
        row['error'] = error_text(err)
    model = None   # freed before the next model is measured
    reset_peak(args.device)
    print(f'[backbones] {json.dumps(row)}', flush=True)
    return row


def ours(cfg):
    def build():
        import mmhybrid  # noqa: F401
        from mmhybrid.registry import MODELS
        return MODELS.build(dict(cfg, drop_path_rate=0.0))
    return build


def timm_peer(model_name):
    def build():
        import timm
        extra = dict(strict_img_size=False) if 'swin' in model_name else {}
        return timm.create_model(model_name, pretrained=False, features_only=True, **extra)
    return build


def official_builders(folder):
    """name -> builder of the official implementations, from the side-by-side ``bench.py``."""
    bench = load_module('mmhybrid_side_by_side_bench', osp.join(folder, 'bench.py'))
    return {name: builder for name, _family, builder, _ in bench.MODELS
            if name.startswith('official/') and callable(builder)}


def check_backbones(args):
    shape = (96, 128) if args.tiny else (800, 1216)
    official = official_builders(args.official) if args.official else {}
    rows = []
    for name, cfg, official_name in FAMILIES:
        rows.append(dict(measure_backbone(name, ours(cfg), args, shape, check_fused=True), family=name,
                         kind='ours'))
        if official_name in official:
            rows.append(dict(measure_backbone(f'{name} official', official[official_name], args, shape),
                             family=name, kind='official'))
    for name, model_name, family in PEERS:
        rows.append(dict(measure_backbone(name, timm_peer(model_name), args, shape), family=family, kind='peer'))
    return rows


def backbone_targets(rows):
    """The issue's targets from the measured rows: bf16 throughput >= 1.3x the official fp32 one,
    peak memory not above the official one's, and within 1.2x of the timm peer's ms per GFLOP."""
    by = {(r['family'], r['kind']): r for r in rows}
    lines = []
    for name, _cfg, _ in FAMILIES:
        ours_row, off = by.get((name, 'ours')), by.get((name, 'official'))
        if not ours_row or not off:
            continue
        if ours_row.get('train_bf16_ms') and off.get('train_fp32_ms'):
            ratio = off['train_fp32_ms'] / ours_row['train_bf16_ms']
            lines.append(f'{name}: bf16 throughput {ratio:.2f}x the official fp32 one '
                         f'({"met" if ratio >= 1.3 else "MISSED"}, target 1.3x)')
        for key in ('fp32', 'bf16'):
            a, b = ours_row.get(f'train_{key}_peak_gib'), off.get(f'train_{key}_peak_gib')
            if a is not None and b is not None:
                lines.append(f'{name}: {key} peak memory {a:.2f} GiB vs official {b:.2f} GiB '
                             f'({"met" if a <= b else "MISSED"})')
    for peer, _model, family in PEERS:
        a, b = by.get((family, 'ours')), by.get((family, 'peer'))
        if a and b and a.get('train_bf16_ms') and b.get('train_bf16_ms') and a.get('gflops') and b.get('gflops'):
            ratio = (a['train_bf16_ms'] / a['gflops']) / (b['train_bf16_ms'] / b['gflops'])
            lines.append(f'{family}: bf16 ms per GFLOP {ratio:.2f}x {peer}\'s '
                         f'({"met" if ratio <= 1.2 else "MISSED"}, target within 1.2x)')
    return lines


# ---------------------------------------------------------------------------------------------
# 3. detectors
# ---------------------------------------------------------------------------------------------

def detector_batch(cfg, batch, hw):
    if cfg.get('default_scope') == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        num_classes = cfg.model.decode_head.num_classes
        inputs, samples = [], []
        for _ in range(batch):
            inputs.append(torch.randint(0, 256, (3, *hw), dtype=torch.uint8))
            sample = SegDataSample(metainfo=dict(img_shape=hw, ori_shape=hw, pad_shape=hw))
            sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *hw)))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=batch, image_shapes=[(3, *hw)] * batch, num_items=[8] * batch,
                          with_mask='mask_rcnn' in cfg.filename)


def measure_detector(name, config, amp, args):
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from mmhybrid.analysis import build_model_from_config
    train_tool = load_module('mmhybrid_tools_train', osp.join(ROOT, 'tools', 'train.py'))
    row = dict(model=name, precision='AMP' if amp else 'fp32')
    try:
        cfg = train_tool.build_config(Namespace(config=osp.join(ROOT, config), launcher='none', cfg_options=None,
                                                work_dir=osp.join(args.out, 'unused'), amp=amp,
                                                auto_scale_lr=False, resume=None))
        cfg.model.backbone.init_cfg = None   # random weights: what is measured is speed and memory
        seg = cfg.get('default_scope') == 'mmseg'
        hw = ((128, 128) if seg else (128, 160)) if args.tiny else ((512, 512) if seg else (800, 1333))
        if seg:
            cfg.model.data_preprocessor.size = hw
        row['images'] = f'2 x {hw[0]} x {hw[1]}'
        model = build_model_from_config(cfg).to(args.device)
        # the optimizer constructor logs every parameter's decay setting: keep the check's output readable
        MMLogger.get_current_instance().setLevel('WARNING')
        model.init_weights()
        model.train()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        batch = detector_batch(cfg, 2, hw)
        times, losses = [], []
        for i in range(args.warmup + args.iters):
            if i == args.warmup:
                reset_peak(args.device)
            sync(args.device)
            t0 = time.perf_counter()
            log_vars = model.train_step(batch, wrapper)
            sync(args.device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
            losses.append(float(log_vars['loss']))
        row.update(s_per_iter=statistics.median(times), peak_gib=peak_gib(args.device), loss=losses[-1])
        if not all(map(lambda v: v == v and abs(v) != float('inf'), losses)):
            row['error'] = f'loss not finite: {losses}'
        del model, wrapper
    except Exception as err:  # noqa: BLE001
        row.update(error=error_text(err), traceback=traceback.format_exc())
    reset_peak(args.device)
    print(f'[detectors] {json.dumps({k: v for k, v in row.items() if k != "traceback"})}', flush=True)
    return row


def check_detectors(args):
    return [measure_detector(name, config, amp, args) for name, config in DETECTORS for amp in (False, True)]


# ---------------------------------------------------------------------------------------------
# 4. distributed launch and the quick start
# ---------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def check_dist(args):
    data = osp.abspath(args.data or osp.join(args.out, 'data'))
    if not osp.exists(osp.join(data, 'toy_coco', 'annotations', 'instances_val.json')):
        sizes = ['--train', '16', '--val', '8'] if args.tiny else []
        subprocess.run([sys.executable, osp.join(ROOT, 'tools/misc/make_toy_datasets.py'), '--out', data, *sizes],
                       check=True, capture_output=True)
    # the quick-start config reads data/toy_coco/ relative to where it runs
    workspace = osp.abspath(osp.join(args.out, 'quickstart'))
    os.makedirs(workspace, exist_ok=True)
    link = osp.join(workspace, 'data')
    if osp.islink(link):
        os.unlink(link)
    if not osp.exists(link):
        os.symlink(data, link)
    work_dir = osp.join(workspace, 'work_dir')
    options = ['default_hooks.logger.interval=10']
    if args.tiny:
        options += ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
                    'train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8',
                    # 8 steps leave every score below the config's 0.05: keep them, so the metric runs
                    'model.test_cfg.score_thr=0.0']
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), osp.join(ROOT, QUICKSTART), '1',
           '--work-dir', work_dir, '--cfg-options', *options]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True)
    row = dict(command=' '.join(['tools/dist_train.sh', QUICKSTART, '1', '--cfg-options', *options]),
               minutes=(time.time() - t0) / 60)
    out = proc.stdout + proc.stderr
    with open(osp.join(args.out, 'dist_train.log'), 'w') as f:
        f.write(out)
    if proc.returncode:
        row['error'] = f'dist_train.sh exited {proc.returncode}: {out.strip().splitlines()[-1][:300] if out.strip() else ""}'
        return [row]
    backend = re.findall(r"'backend': '(\w+)'", out)
    row['backend'] = 'gloo' if "replaced by 'gloo'" in out else (backend[-1] if backend else 'unknown')
    row['world_size'] = int(m.group(1)) if (m := re.search(r'GPU number: (\d+)', out)) else None
    demo = load_module('mmhybrid_tools_demo', osp.join(ROOT, 'tools', 'demo.py'))
    row['bbox_mAP'] = demo.last_metrics(work_dir).get('coco/bbox_mAP')
    print(f'[dist] {json.dumps(row)}', flush=True)
    return [row]


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------

def environment(args):
    import mmcv
    from mmcv.ops import get_compiling_cuda_version
    env = dict(device=torch.cuda.get_device_name(args.device) if is_cuda(args.device) else 'cpu',
               torch=torch.__version__, cuda=torch.version.cuda, mmcv=mmcv.__version__,
               mmcv_ops_cuda=get_compiling_cuda_version(), threads=torch.get_num_threads(), tiny=args.tiny)
    try:
        import timm
        env['timm'] = timm.__version__
    except ImportError:
        env['timm'] = None
    return env


def md_table(header, rows):
    """A markdown table (after a blank line) from a header and rows of cells."""
    lines = ['', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def with_error(text, row, key='error'):
    return f'{text} {row[key]}' if key in row else text


def summary(env, results, notes):
    md = [f'GPU check on **{env["device"]}** (torch {env["torch"]}, CUDA {env["cuda"]}, mmcv {env["mmcv"]} '
          f'with ops for CUDA {env["mmcv_ops_cuda"]}){" in --tiny mode" if env["tiny"] else ""}:', '']
    md += [f'- {n}' for n in notes]
    if 'ops' in results:
        md += md_table(['mmcv op', 'CPU kernel vs reference', 'device vs reference', 'device vs CPU', 'bf16 inputs', ''],
                       [[r['op'], r.get('cpu') or fmt(r.get('cpu_vs_reference'), '.1e'),
                         fmt(r.get('device_vs_reference'), '.1e'), fmt(r.get('device_vs_cpu'), '.1e'),
                         r.get('bf16', '-'), 'ok' if r['ok'] else with_error('FAILED', r)] for r in results['ops']])
    if 'backbones' in results:
        md += md_table(['backbone', 'fwd GFLOPs', 'train fp32 ms', 'train bf16 ms', 'peak fp32 GiB', 'peak bf16 GiB',
                        'fused SDPA (fp32/bf16)'],
                       [[r['model'], fmt(r.get('gflops')),
                         r.get('train_fp32_error') or fmt(r.get('train_fp32_ms')),
                         r.get('train_bf16_error') or fmt(r.get('train_bf16_ms')),
                         fmt(r.get('train_fp32_peak_gib'), '.2f'), fmt(r.get('train_bf16_peak_gib'), '.2f'),
                         with_error('/'.join(r.get(f'fused_{k}', '-') for k in ('fp32', 'bf16'))
                                    if r['kind'] == 'ours' else '', r)] for r in results['backbones']])
        md += [''] + [f'- {line}' for line in backbone_targets(results['backbones'])]
    if 'detectors' in results:
        md += md_table(['model (optimizer steps)', 'images', 'precision', 's/iter', 'peak GiB', 'last loss'],
                       [[r['model'], r.get('images', '-'), r['precision'], fmt(r.get('s_per_iter'), '.3f'),
                         fmt(r.get('peak_gib'), '.2f'), with_error(fmt(r.get('loss'), '.3f'), r)]
                        for r in results['detectors']])
    for r in results.get('dist', []):
        md += ['', f'Quick start through `{r.get("command", "tools/dist_train.sh")}`: '
               + (r['error'] if 'error' in r else
                  f'backend {r["backend"]}, world size {r["world_size"]}, {r["minutes"]:.1f} min, '
                  f'bbox mAP {fmt(r.get("bbox_mAP"), ".3f")}')]
    return '\n'.join(md) + '\n'


def failed(results) -> list:
    bad = []
    for section, rows in results.items():
        for r in rows:
            if r.get('ok') is False or 'error' in r or any(k.endswith('_error') for k in r) \
                    or any(str(r.get(k, '')).startswith('NO') for k in ('fused_fp32', 'fused_bf16')):
                bad.append(f'{section}: {r.get("op") or r.get("model") or r.get("command")}')
    return bad


def main(argv=None) -> int:
    args = parse_args(argv)
    if is_cuda(args.device) and not torch.cuda.is_available():
        print(f'gpu_check: skipped: no CUDA device here (torch {torch.__version__}, built for CUDA '
              f'{torch.version.cuda}). Run it on a GPU machine, or with --device cpu --tiny for the CPU mode.')
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if is_cuda(args.device):
        torch.backends.cudnn.benchmark = True
    args.batch = 1 if args.tiny else 2
    os.makedirs(args.out, exist_ok=True)
    import mmhybrid  # noqa: F401
    env = environment(args)
    print(f'[env] {json.dumps(env)}', flush=True)
    notes = []
    if args.tiny:
        notes.append('--tiny: toy sizes on purpose; the figures show that every path runs, '
                     'they do not measure the targets')
    if 'backbones' in args.sections and not args.official:
        notes.append('official implementations not compared: pass --official DIR (the folder of the '
                     'side-by-side bench.py, e.g. ../shared/bench)')
        print('gpu_check: ' + notes[-1], flush=True)
    checks = dict(ops=check_ops, backbones=check_backbones, detectors=check_detectors, dist=check_dist)
    results = {}
    for section in SECTIONS:
        if section in args.sections:
            try:
                results[section] = checks[section](args)
            except Exception as err:  # noqa: BLE001  (one broken section does not hide the others)
                results[section] = [dict(model=section, error=error_text(err), traceback=traceback.format_exc())]
                print(f'[{section}] FAILED: {error_text(err)}', flush=True)
    text = summary(env, results, notes)
    with open(osp.join(args.out, 'summary.md'), 'w') as f:
        f.write(text)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(env=env, notes=notes, results=results), f, indent=1)
    print('\n' + text)
    bad = failed(results)
    if bad:
        print('gpu_check: FAILED: ' + '; '.join(bad), file=sys.stderr)
        return 1
    print(f'gpu_check: all checks passed ({osp.join(args.out, "summary.md")})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
