"""Latency of exported models in ONNX Runtime (CPU) next to PyTorch eager, in one process.

Usage:
    python tools/deployment/benchmark_onnx.py CONFIG [CONFIG ...] [--shape H W] [--threads N]
        [--warmup N] [--iters N] [--markdown FILE]

Per config: the model with random weights, exported as tools/deployment/export_onnx.py does
(batch 1, --shape), timed as the same graph in PyTorch (fp32, inference mode) and in ONNX
Runtime's CPU provider with as many threads, alternately; median milliseconds.
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from mmhybrid.analysis.build import load_config  # noqa: E402
from mmhybrid.analysis.report import command_line, describe_machine  # noqa: E402


def parse_args(argv=None):
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description='ONNX Runtime against PyTorch eager latency',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('configs', nargs='+', help='detector or segmentor configs')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1216], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=None, help='torch and ONNX Runtime threads')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--markdown', help='also write the table (with machine and command) here')
    return parser.parse_args(argv)


def main(argv=None) -> list:
    """Time every config and print a table.

    Returns:
        list[dict]: One result per config (see ``mmhybrid.deploy.benchmark.compare_latency``).
    """
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmhybrid.deploy.benchmark import compare_latency
    rows, results = ['| config | input | PyTorch eager ms | ONNX Runtime ms | ORT speed-up |', '|---|---|---|---|---|'], []
    for config in args.configs:
        res = dict(config=osp.basename(config), **compare_latency(load_config(config), args.shape, args.warmup,
                                                                   args.iters))
        results.append(res)
        rows.append(f'| {res["config"]} | {args.shape[0]}x{args.shape[1]} | {res["eager_ms"]:.0f} | '
                    f'{res["ort_ms"]:.0f} | {res["speedup"]:.2f}x |')
        print(rows[-1], flush=True)
    text = '\n'.join([f'Measured on {describe_machine("cpu")}, with `{command_line(sys.argv[0], argv or sys.argv[1:])}`:',
                      '', *rows]) + '\n'
    print(text)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(text)
    return results


if __name__ == '__main__':
    main()
