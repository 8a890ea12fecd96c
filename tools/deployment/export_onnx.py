"""Export a trained detector or segmentor to ONNX, then run it with ONNX Runtime.

Usage:
    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx
        [--shape H W] [--dynamic] [--batch N] [--logits] [--force] [--cfg-options KEY=VALUE ...]

The whole model is exported with torch.onnx's torch.export-based exporter: backbone, neck,
heads, box decoding and multi-class NMS (ONNX NonMaxSuppression) for RetinaNet, Mask R-CNN
and Cascade Mask R-CNN, with the config's test_cfg (score threshold, IoU, detections per
image); the class map (and, with --logits, the logits) for UperNet and Semantic FPN.

Input ``images``: float32 (B, 3, H, W), normalized with the config's mean and std, in its
channel order, padded to its size divisor; the file's metadata (key ``mmhybrid``) records
them. Outputs: ``dets`` (B, N, 5) x1, y1, x2, y2, score in input pixels and ``labels`` (B, N)
(-1 where no detection), ``masks`` (B, N, M, M) per-box probabilities for Mask R-CNN; ``seg``
(B, H, W) class indices and ``logits`` (B, C, H, W) for segmentors.

Without --shape the file takes the config's largest test image; --dynamic frees batch, height
and width (multiples of the size divisor) where the backbone allows it. Evaluate the file
like a checkpoint: ``python tools/test.py CONFIG FILE.onnx``. Exit status 2 with one line,
and no file written, when the export cannot be done as asked.
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


def parse_args(argv=None):
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description='Export a detector or segmentor to ONNX',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='the model\'s config file')
    parser.add_argument('checkpoint', help='its trained checkpoint (tools/train.py\'s .pth)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the config\'s largest test image, padded)')
    parser.add_argument('--dynamic', action='store_true', help='free batch, height and width')
    parser.add_argument('--batch', type=int, default=1, help='batch of a file of fixed size (default 1)')
    parser.add_argument('--logits', action='store_true', help='segmentors: also output the logits')
    parser.add_argument('--force', action='store_true', help='replace an existing --out file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f'export_onnx.py: error: {message}', file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Export, then print where the file is and what it takes.

    Returns:
        int: 0, or 2 when the export cannot be done as asked.
    """
    args = parse_args(argv)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            return fail(f'{what} not found: {path}')
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        return fail('the exporter needs onnx and onnxscript: pip install -e .[deploy]')
    from mmhybrid.deploy.export import ExportError, export_onnx
    cfg = load_config(args.config, args.cfg_options)
    try:
        result = export_onnx(cfg, args.checkpoint, args.out, shape=args.shape, dynamic=args.dynamic,
                             batch=args.batch, logits=args.logits, overwrite=args.force)
    except ExportError as err:
        return fail(str(err))
    meta = result['metadata']
    size = 'any batch and size (multiples of {})'.format(meta['size_divisor']) if meta['dynamic'] else \
        f'{args.batch} x 3 x {meta["shape"][0]} x {meta["shape"][1]}'
    print(f'wrote {result["out"]}: images {size} -> {", ".join(meta["outputs"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
