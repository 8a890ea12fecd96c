"""Test (and evaluate) a detector (mmdet config) or a segmentor (mmseg config).

CHECKPOINT is a checkpoint of the config's model, or a file of
tools/deployment/export_onnx.py run by ONNX Runtime (same metric, comparable numbers).

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--show]
        [--show-dir DIR] [--wait-time SECONDS] [--cfg-options KEY=VALUE ...]
        [--launcher LAUNCHER] [--tta]

``--out``: for mmdet configs a .pkl file of the predictions; for mmseg configs
a directory for the predicted masks. Works from a checkout without installing
the package. Exit status 2, with a message and no traceback, when the dataset
files or the checkpoint are missing or an option cannot be used with the config.
"""
import argparse
import logging
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy

# setuptools < 82 is pinned for mmcv/mmengine, which import pkg_resources and warn on every start
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmhybrid  # noqa: E402,F401  (registers the project's models)
from mmhybrid.checkpoints import CheckpointLoadError, CheckpointMismatchError  # noqa: E402
from mmhybrid.utils import (DatasetClassesError, DatasetNotFoundError,  # noqa: E402
                            LauncherError, check_dataset_classes, check_dataset_paths,
                            finish_distributed, setup_distributed_without_cuda)


def parse_args():
    """Parse the command line (the flags of mmdet 3.x's ``tools/test.py``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector or a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the directory to save the evaluation metrics in')
    parser.add_argument(
        '--out', type=str,
        help='mmdet: .pkl file to dump the predictions to; mmseg: directory to '
        'save the predicted masks in')
    parser.add_argument('--show', action='store_true', help='show predictions')
    parser.add_argument(
        '--show-dir', help='directory to save images with painted predictions in')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy pairs merged into the config, '
        'e.g. test_dataloader.dataset.data_root=/data/coco/ or key="[a,b]"')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
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
    print(f'test.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def enable_visualization(cfg, args):
    """Turn on the ``visualization`` hook for ``--show`` / ``--show-dir``.

    mmdet's DetVisualizationHook writes to its ``test_out_dir``; mmseg's
    SegVisualizationHook writes through the visualizer, to its ``save_dir``.

    Args:
        cfg (mmengine.Config): The config; changed in place.
        args (argparse.Namespace): Output of :func:`parse_args`.
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        fail('--show / --show-dir need a visualization hook: add '
             "default_hooks = dict(visualization=dict(type='DetVisualizationHook')) "
             "(or 'SegVisualizationHook') to the config")
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        if cfg.get('default_scope') == 'mmseg':
            cfg.visualizer.save_dir = args.show_dir
        else:
            hook.test_out_dir = args.show_dir


def flip_tta_pipeline(test_pipeline):
    """mmdet's default test-time augmentation: the test pipeline with and without
    a horizontal flip.

    Args:
        test_pipeline (list[dict]): The test pipeline; its last transform
            (``PackDetInputs``) is replaced.

    Returns:
        list[dict]: The TTA pipeline.
    """
    pack = dict(type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor', 'flip', 'flip_direction'))
    flips = [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)]
    return deepcopy(test_pipeline[:-1]) + [
        dict(type='TestTimeAug', transforms=[flips, [pack]])]


def enable_tta(cfg):
    """Wrap the model in its TTA model and test with the TTA pipeline (``--tta``).

    mmdet configs without ``tta_model`` / ``tta_pipeline`` get DetTTAModel and
    a flip pipeline; mmseg configs without ``tta_model`` get SegTTAModel and
    must set ``tta_pipeline`` (mmseg's dataset bases do).

    Args:
        cfg (mmengine.Config): The config; changed in place.
    """
    scope = cfg.get('default_scope')
    test_dataset = cfg.test_dataloader.dataset
    while 'dataset' in test_dataset:
        test_dataset = test_dataset.dataset
    if cfg.get('tta_model') is None:
        if scope == 'mmdet':
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                             max_per_img=100))
        elif scope == 'mmseg':
            cfg.tta_model = dict(type='SegTTAModel')
        else:
            fail('--tta needs tta_model in the config')
        print_log(f'--tta: no tta_model in the config, using {cfg.tta_model}',
                  logger='current', level=logging.WARNING)
    if cfg.get('tta_pipeline') is None:
        if scope != 'mmdet':
            fail('--tta needs tta_pipeline in the config')
        cfg.tta_pipeline = flip_tta_pipeline(test_dataset.pipeline)
        print_log('--tta: no tta_pipeline in the config, using the test pipeline '
                  'with and without horizontal flip', logger='current',
                  level=logging.WARNING)
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    test_dataset.pipeline = cfg.tta_pipeline


def dump_predictions(cfg, out):
    """Make the test evaluator also save the predictions (``--out``).

    Args:
        cfg (mmengine.Config): The config; changed in place.
        out (str): mmdet and other scopes: a .pkl file (DumpDetResults /
            mmengine's DumpResults); mmseg: the metric's ``output_dir``.
    """
    if cfg.get('default_scope') == 'mmseg':
        metrics = cfg.test_evaluator
        for metric in metrics if isinstance(metrics, list) else [metrics]:
            metric.output_dir = out
        return
    if not out.endswith(('.pkl', '.pickle')):
        fail(f'--out must be a .pkl or .pickle file, got {out}')
    dump = dict(type='DumpDetResults' if cfg.get('default_scope') == 'mmdet'
                else 'DumpResults', out_file_path=out)
    metrics = cfg.test_evaluator
    cfg.test_evaluator = (list(metrics) if isinstance(metrics, list)
                          else [metrics]) + [dump]


def use_onnx_file(cfg, path):
    """Test an exported file (tools/deployment/export_onnx.py) in place of the config's model: ONNX
    Runtime runs it (on the GPU where its CUDA provider is installed and CUDA is there), fed by the
    config's data preprocessor, and mmdet's / mmseg's metric evaluates its predictions.

    Args:
        cfg (mmengine.Config): The config; changed in place.
        path (str): The .onnx file.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        fail('testing an .onnx file needs onnxruntime: pip install -e .[deploy]')
    import torch
    model = cfg.model
    common = dict(onnx_file=path, data_preprocessor=model.get('data_preprocessor'),
                  device='cuda' if torch.cuda.is_available() else 'cpu')
    if cfg.get('default_scope') == 'mmseg':
        head = model.decode_head
        cfg.model = dict(type='mmhybrid.ONNXRuntimeSegmentor', align_corners=head.get('align_corners', False),
                         threshold=head.get('threshold') or 0.3, **common)
    else:
        rcnn = (model.get('test_cfg') or {}).get('rcnn') or {}
        cfg.model = dict(type='mmhybrid.ONNXRuntimeDetector', mask_thr_binary=rcnn.get('mask_thr_binary', 0.5),
                         **common)
    cfg.load_from = None


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
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        fail(f'checkpoint not found: {args.checkpoint}')
    if args.checkpoint.endswith('.onnx'):
        use_onnx_file(cfg, args.checkpoint)
    else:
        cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        if cfg.model.type.startswith('mmhybrid.ONNXRuntime'):
            fail('--tta runs the model several times per image with its own merging: test the .pth')
        enable_tta(cfg)
    if args.out is not None:
        dump_predictions(cfg, args.out)
    return cfg


def main():
    """Test with the Runner the config asks for (``runner_type``, or mmengine's); an ``.onnx`` file runs in
    ONNX Runtime (:func:`use_onnx_file`)."""
    args = parse_args()
    cfg = build_config(args)
    try:
        check_dataset_paths(cfg, ['test_dataloader'])
    except DatasetNotFoundError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    try:   # the annotation file is read once per machine (COCO's train set: about 3 GiB for a moment)
        if os.environ.get('LOCAL_RANK', '0') == '0':
            check_dataset_classes(cfg, ['test_dataloader'], log=True)
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
        runner.test()
    except (CheckpointLoadError, CheckpointMismatchError) as err:
        # every checkpoint (load_from, resume, init_cfg) is read by mmhybrid's safe loader
        fail(str(err))
    finish_distributed()


if __name__ == '__main__':
    main()
