"""Speed, memory and efficiency of a backbone: forward and training step, fp32 and bf16.

Measures, at each input shape and batch, per mode (``--modes``):

- ``forward``: eval mode, ``torch.inference_mode``, fp32 (or ``--amp``);
- ``train``: a training step without optimizer (train mode, drop path / dropout set to
  0, forward, mean of the outputs, backward), fp32 (or ``--amp``);
- ``forward-bf16``, ``train-bf16`` (also ``forward-fp16``, ``train-fp16``): the same under
  ``torch.autocast('cpu' or 'cuda', dtype)``;

each with median / mean ms and images/s, the counted FLOPs of one step
(``torch.utils.flop_counter``, attention included, as get_flops.py), efficiency = FLOPs /
median time / peak GEMM rate of the mode's precision (fp32, TF32 off on CUDA; or the
autocast dtype) on this device in this process: the best of several large GEMM shapes
(``--gemm-shapes``), and the peak memory of one step: on CUDA
``torch.cuda.max_memory_allocated`` after a reset, minus what model and input already
hold; on CPU the peak RSS increase over the idle process, measured in a fresh subprocess
(baseline: RSS after building model and input and releasing freed memory; peak: the RSS
high-water mark VmHWM, reset at the baseline on Linux; ``ru_maxrss`` elsewhere).

The implementation is ``mmhybrid.analysis`` (``benchmark``, ``measure``, ``report``).

Examples::

    python tools/analysis/benchmark.py --backbone CrossFormer --arch small --shape 512 512 --threads 2
    python tools/analysis/benchmark.py --config configs/retinanet_crossformer_s_coco.py \\
        --shape 800 1216 --iters 5 --json out.json
    python tools/analysis/benchmark.py --backbone CrossFormer --arch small --device cuda --amp bf16
    # only the fp32 forward and training step
    python tools/analysis/benchmark.py --backbone CvT --arch 13 --modes forward,train
    # a markdown table of several backbones and shapes, for docs/benchmarks.md
    python tools/analysis/benchmark.py --backbone CrossFormer --arch small \\
        --backbone Conv2Former --arch tiny --shape 512 512 --shape 800 1216 \\
        --threads 2 --markdown bench.md
"""
import argparse
import json
import sys
from typing import Any, Dict, List, Tuple, Union

import torch

from mmhybrid.analysis import benchmark, build, cli, report
from mmhybrid.analysis.measure import AMP_DTYPES


def parse_gemm_shapes(text: str) -> List[Tuple[int, int, int]]:
    """``'2048,8192x1024x1024'`` -> ``[(2048, 2048, 2048), (8192, 1024, 1024)]``."""
    shapes = []
    for item in filter(None, (t.strip() for t in text.split(','))):
        sizes = [int(v) for v in item.split('x')]
        if len(sizes) not in (1, 3) or min(sizes) < 1:
            raise argparse.ArgumentTypeError(f'{item!r}: give MxKxN or one size')
        shapes.append(tuple(sizes * 3 if len(sizes) == 1 else sizes))
    if not shapes:
        raise argparse.ArgumentTypeError('no GEMM shape')
    return shapes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Forward / training-step time in fp32 and bf16, peak memory, FLOPs and '
        'efficiency of one or more backbones',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    cli.add_model_args(parser, config_positional=False, multiple=True)
    parser.add_argument('--shape', type=int, nargs='+', action='append', default=None,
                        help='input H W (or one int); repeat for several shapes; '
                        'default 512 512')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--in-channels', type=int, default=3)
    parser.add_argument('--modes', default=','.join(benchmark.DEFAULT_MODES),
                        help='comma-separated steps to time, from: '
                        f'{", ".join(benchmark.MODE_NAMES)}. forward = eval + inference_mode; '
                        'train = forward+backward in train mode; -bf16/-fp16 = under '
                        'torch.autocast (cpu or cuda). Default: %(default)s (the bf16 modes '
                        'roughly double the run; --modes forward,train for the fp32 ones only)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per mode')
    parser.add_argument('--iters', type=int, default=10, help='timed steps per mode')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s choice)')
    parser.add_argument('--amp', nargs='?', const='bf16', choices=sorted(AMP_DTYPES),
                        default=None, help='autocast dtype of the plain forward/train modes '
                        'and the FLOP count (bf16 when given alone); default fp32')
    parser.add_argument('--with-cp', action='store_true',
                        help='build the backbone with with_cp=True (activation checkpointing)')
    parser.add_argument('--gemm-shapes', type=parse_gemm_shapes, default=None,
                        help='GEMM shapes whose best rate is the peak efficiencies divide by: '
                        'comma-separated MxKxN (or one N for a square); default: the '
                        'device\'s list in mmhybrid.analysis.measure.GEMM_SHAPES')
    parser.add_argument('--gemm-reps', type=int, default=2, help='timed calls per GEMM shape')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--json', help='also write the results to this JSON file (one run: '
                        'its dict; several backbones/shapes: a list)')
    parser.add_argument('--markdown', help='also write a markdown table (one row per backbone, '
                        'shape and mode) to this file, after a line naming the machine and '
                        'this command')
    args = parser.parse_args(argv)
    cli.check_model_args(parser, args, '--config', multiple=True)
    args.shape = args.shape or [[512, 512]]
    try:
        for shape in args.shape:
            build.resolve_shape(shape)
        args.modes = benchmark.parse_modes(args.modes, args.amp)
    except ValueError as err:
        parser.error(str(err))
    if args.iters < 1:
        parser.error('--iters must be >= 1')
    if torch.device(args.device).type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    return args


def make_specs(args) -> List[Dict[str, Any]]:
    """One spec per backbone and shape."""
    if args.config:  # model.backbone of a config file, in the config's scope
        cfg = build.load_config(args.config, args.cfg_options)
        bcfg = build.backbone_cfg_from_config(cfg)
        bcfg.update(args.backbone_args or {})
        sources = [(bcfg, build.config_scope(cfg), f'model.backbone of {args.config}')]
    else:  # backbones named on the command line, in the mmhybrid scope
        sources = [(bcfg, None, 'backbone') for bcfg in cli.backbone_cfgs_from_args(args)]
    return [benchmark.make_spec(bcfg, default_scope=scope, source=source,
                                import_modules=args.import_module, shape=shape,
                                batch=args.batch, in_channels=args.in_channels,
                                device=args.device, threads=args.threads, amp=args.amp,
                                with_cp=args.with_cp)
            for bcfg, scope, source in sources for shape in args.shape]


def main(argv=None) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    build.import_project(args.import_module)
    if args.amp and torch.device(args.device).type != 'cuda':
        print(f'note: --amp {args.amp} on {args.device}: CPU autocast', file=sys.stderr)
    specs = make_specs(args)
    peaks = benchmark.measure_peaks(args.device, benchmark.mode_precisions(args.modes),
                                    args.gemm_shapes, args.gemm_reps)
    results = []
    for spec in specs:
        res = benchmark.run_benchmark(spec, args.modes, warmup=args.warmup, iters=args.iters,
                                      memory=not args.no_memory, peaks=peaks)
        print(report.benchmark_table(res), flush=True)
        results.append(res)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=2)
    if args.markdown:
        command = report.command_line(__file__, argv)
        with open(args.markdown, 'w') as f:
            f.write(report.markdown_report(results, command, report.describe_machine(args.device)))
        print(f'markdown table written to {args.markdown}')
    return results[0] if len(results) == 1 else results


if __name__ == '__main__':
    main()
