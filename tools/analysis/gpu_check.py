"""The GPU check: mmcv's CUDA ops, every backbone family's training step, the detectors'
optimizer steps, an NCCL launch and the quick start, in one run, with a markdown summary.

    python tools/analysis/gpu_check.py --official ../shared/bench --out work_dirs/gpu_check
    python tools/analysis/gpu_check.py --device cpu --tiny --out /tmp/gpu_check   # the CPU mode

Sections (``--sections``, default all):

1. ``ops``: mmcv's compiled ops that the configs run (nms, batched_nms, roi_align with
   its backward, sigmoid_focal_loss with its backward) on the device against their CPU
   kernels, and every result against a plain PyTorch / torchvision reference; then each
   op with bf16 inputs (refused, or how far from fp32), which is why ``--amp`` runs
   them in fp32 (``mmhybrid/engine/fp32_ops.py``).
2. ``backbones``: each registered family's training step (forward, mean of the maps,
   backward) at batch 2 x 3 x 800 x 1216 in fp32 and bf16 autocast: ms/iter (CUDA events,
   median after warm-up), peak memory of a step (``max_memory_allocated``, CUDA only),
   forward GFLOPs; next to the official implementations when ``--official DIR`` names a
   folder holding their side-by-side ``bench.py`` (with ``official/``), and next to timm's
   Swin-T and ConvNeXt-T. Each family's step is run once more with SDPA's math kernel
   disabled, which shows that every attention call found a fused kernel. The targets
   (``--target-*``) are reported as met or MISSED.
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

The implementation is ``mmhybrid.analysis.gpu_check``.
"""
import argparse
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmhybrid.analysis.gpu_check import SECTIONS, GpuCheckOptions, Targets, run_gpu_check  # noqa: E402


def parse_args(argv=None) -> GpuCheckOptions:
    """The command line as the check's options (usage errors exit 2)."""
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
    default = Targets()
    p.add_argument('--target-bf16-speedup', type=float, default=default.bf16_speedup,
                   help='target: our bf16 training throughput at least this many times the official '
                        'fp32 one (default %(default)s)')
    p.add_argument('--target-memory-ratio', type=float, default=default.memory_ratio,
                   help='target: our peak memory at most this many times the official one\'s '
                        '(default %(default)s)')
    p.add_argument('--target-peer-ratio', type=float, default=default.peer_ms_per_gflop,
                   help='target: our bf16 ms per GFLOP at most this many times the timm peer\'s '
                        '(default %(default)s)')
    args = p.parse_args(argv)
    if args.official and not osp.isfile(osp.join(args.official, 'bench.py')):
        p.error(f'--official {args.official}: no bench.py there (the side-by-side benchmark folder, '
                'e.g. ../shared/bench, holding bench.py and official/)')
    targets = Targets(args.target_bf16_speedup, args.target_memory_ratio, args.target_peer_ratio)
    try:
        return GpuCheckOptions(device=args.device, tiny=args.tiny, out=args.out, official=args.official,
                               sections=[s.strip() for s in args.sections.split(',') if s.strip()],
                               data=args.data, warmup=args.warmup, iters=args.iters,
                               threads=args.threads, targets=targets)
    except ValueError as err:
        p.error(f'--sections: {err}')


def main(argv=None) -> int:
    return run_gpu_check(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
