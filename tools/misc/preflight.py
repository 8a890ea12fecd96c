"""Check a config before queueing a training job (a GPU cluster, or a long CPU run).

Usage:
    python tools/misc/preflight.py CONFIG [--gpus N] [--cfg-options KEY=VALUE ...]
        [--shape H W] [--batch N] [--steps N] [--device DEVICE] [--tiny]

Builds the model as ``tools/train.py`` does, loads its pretrained file when it is there, and
runs training steps on a synthetic batch at the config's training size. One line per finding;
exit status 1 if any is FAIL: a trainable parameter without a gradient (DDP with
``find_unused_parameters=False`` stops at iteration 2), a neck that reads other channels than
the backbone returns, a dataset whose categories are not the config's classes, or a step that
fails. Also prints whether the dataset and weight files exist, the batch and learning rate on
N GPUs (``--auto-scale-lr``), the step's peak memory and its time on this machine.

``--tiny`` runs the family's small test arch at a small size instead (seconds on a CPU): the
gradient and wiring checks of the config, without its cost.
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import DictAction  # noqa: E402

from mmhybrid.analysis.build import load_config  # noqa: E402
from mmhybrid.analysis.preflight import run_preflight  # noqa: E402


def parse_args(argv=None):
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description='Check a config before queueing a training job',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--gpus', type=int, default=8, help='GPUs the job will use (default 8)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='synthetic image size (default: the config\'s largest training size)')
    parser.add_argument('--batch', type=int, help='images per step (default: the config\'s per-GPU batch)')
    parser.add_argument('--steps', type=int, default=2,
                        help='training steps: the first is checked, the others timed (default 2)')
    parser.add_argument('--device', help='cpu, cuda, cuda:1, ... (default: cuda when available)')
    parser.add_argument('--tiny', action='store_true',
                        help='the family\'s small test arch at a small size: the checks in seconds')
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.steps < 1:
        parser.error('--gpus and --steps must be at least 1')
    return args


def main(argv=None) -> int:
    """Run the checks and print one line per finding.

    Returns:
        int: 1 if any check failed, else 0.
    """
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'preflight.py: error: config not found: {args.config}', file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.cfg_options)
    checks = run_preflight(cfg, gpus=args.gpus, tiny=args.tiny, shape=args.shape, batch=args.batch,
                           steps=args.steps, device=args.device)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.status == 'FAIL']
    print(f'preflight: {len(failed)} failed' if failed else 'preflight: passed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
