"""Train a detector (mmdet config) or a segmentor (mmseg config) with mmengine.

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher LAUNCHER]

``--amp`` trains in mixed precision with ``mmhybrid.MixedPrecisionOptimWrapper``:
on a CUDA GPU as mmengine's ``AmpOptimWrapper`` (bfloat16 where the GPU supports
it, else float16 with dynamic loss scaling), on the CPU with bfloat16 autocast
(no loss scaling). A config's ``optim_wrapper.dtype`` picks the dtype; float16 on
the CPU is refused. A config that names mmengine's ``AmpOptimWrapper`` trains the
same way. mmdet's ``RPNHead``, ``SingleRoIExtractor`` and ``FocalLoss`` are swapped for
mmhybrid's versions that run mmcv's NMS, RoIAlign and focal loss (no bf16 kernels) in
float32 (``mmhybrid/engine/fp32_ops.py``).

Works from a checkout without installing the package. Exit status 2, with a
message and no traceback, when the dataset files are missing or an option cannot
be used on this machine.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

# setuptools < 82 is pinned for mmcv/mmengine, which import pkg_resources and warn on every start
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmhybrid  # noqa: E402,F401  (registers the project's models)
from mmhybrid.engine.amp import AMP_WRAPPERS, configure_mixed_precision  # noqa: E402
from mmhybrid.checkpoints import CheckpointLoadError, CheckpointMismatchError  # noqa: E402
from mmhybrid.utils import (DatasetClassesError, DatasetNotFoundError,  # noqa: E402
                            LauncherError, check_dataset_classes, check_dataset_paths,
                            finish_distributed, setup_distributed_without_cuda,
                            unused_parameters_message)


def parse_args():
    """Parse the command line (the flags of mmdet 3.x's ``tools/train.py``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision training: bf16 (or fp16 where the GPU lacks '
        'bf16) on a CUDA GPU, bf16 autocast on the CPU')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by the actual / base batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint; without a value, from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy pairs merged into the config, '
        'e.g. train_dataloader.dataset.data_root=/data/coco/ or key="[a,b]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torchrun passes --local-rank (older launchers --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def fail(message):
    """Print a one-line error to stderr and exit with status 2.

    Args:
        message (str): What went wrong and what to do.
    """
    print(f'train.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def setup_amp(cfg, explicit):
    """Make the config train in mixed precision with mmhybrid's wrapper, on
    the CPU or a GPU; exit with a one-line message where that cannot work.

    Args:
        cfg (mmengine.Config): The config (changed in place).
        explicit (bool): Whether ``--amp`` asked for it (else the config names
            an AMP wrapper itself).
    """
    try:
        device, dtype = configure_mixed_precision(cfg, explicit)
    except ValueError as err:
        fail(str(err))
    print(f'train.py: mixed precision on {device} in {str(dtype).replace("torch.", "")}'
          + (' (no loss scaling)' if device == 'cpu' else ''), file=sys.stderr)


def build_config(args):
    """Load the config and apply the command-line options to it.

    Args:
        args (argparse.Namespace): Output of :func:`parse_args`.

    Returns:
        mmengine.Config: The config to build the Runner from.
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # work_dir: command line, then config, then ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    optim_wrapper = cfg.get('optim_wrapper') or {}
    if args.amp or optim_wrapper.get('type') in AMP_WRAPPERS:
        setup_amp(cfg, explicit=args.amp)
    if args.auto_scale_lr:
        auto_scale_lr = cfg.get('auto_scale_lr') or {}
        if 'enable' not in auto_scale_lr or 'base_batch_size' not in auto_scale_lr:
            fail('--auto-scale-lr needs auto_scale_lr = dict(enable=False, '
                 'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main():
    """Train with the Runner the config asks for (``runner_type``, or mmengine's)."""
    args = parse_args()
    cfg = build_config(args)
    dataloaders = ['train_dataloader']
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None:
        dataloaders.append('val_dataloader')
    try:
        check_dataset_paths(cfg, dataloaders)
    except DatasetNotFoundError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    try:   # the annotation file is read once per machine (COCO's train set: about 3 GiB for a moment)
        if os.environ.get('LOCAL_RANK', '0') == '0':
            check_dataset_classes(cfg, dataloaders, log=True)
    except DatasetClassesError as err:
        fail(str(err))
    try:
        setup_distributed_without_cuda(cfg, args.launcher)
    except LauncherError as err:
        fail(str(err))
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    except (CheckpointLoadError, CheckpointMismatchError) as err:
        # every checkpoint (load_from, resume, init_cfg) is read by mmhybrid's safe loader
        fail(str(err))
    except RuntimeError as err:
        message = unused_parameters_message(runner.model, err)
        if message is None:
            raise
        fail(message)
    finish_distributed()


if __name__ == '__main__':
    main()
