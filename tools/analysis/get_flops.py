"""FLOPs and parameters of a backbone or of the full model of a config.

Counting uses ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls and
``scaled_dot_product_attention``), extended with the CPU attention kernel, which torch's
own table leaves out, and with the oneDNN convolutions with fused epilogues of inference
fast paths (``mmhybrid.analysis.flops``). mmengine's counter misses attention.

Units: one multiply-add is 2 FLOPs = 1 MAC. Papers that report "FLOPs" for vision
backbones (Swin, CrossFormer, ...) report MACs; compare their numbers with the MACs line.
Element-wise operations, normalisation and softmax are not counted (as in fvcore).

Examples::

    # a registered backbone (mmhybrid scope, or scoped names such as mmdet.ResNet)
    python tools/analysis/get_flops.py --backbone CrossFormer --arch small --shape 224
    python tools/analysis/get_flops.py --backbone-cfg "dict(type='mmhybrid.CrossFormer', arch='small')"
    # the full model of an mmdet / mmseg config (extract_feat + head), no dataset needed
    python tools/analysis/get_flops.py configs/retinanet_crossformer_s_coco.py --shape 800 1216
    # per-module breakdown two levels deep
    python tools/analysis/get_flops.py --backbone CrossFormer --arch small --depth 2
"""
import argparse
import json
from typing import Any, Dict

from mmhybrid.analysis import build, cli, report
from mmhybrid.analysis.flops import analyze_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='FLOPs (FlopCounterMode, attention included) and params of a backbone '
        'or of the full model of a config',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    cli.add_model_args(parser, config_positional=True)
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size: H W, or one int for a square (default 224)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--in-channels', type=int, default=3)
    parser.add_argument('--no-pad', action='store_true',
                        help='config models: do not round the shape up to the '
                        'data_preprocessor pad_size_divisor')
    parser.add_argument('--device', default='cpu', help='cpu (default), cuda, cuda:1, ...')
    parser.add_argument('--depth', type=int, default=None,
                        help='also print a per-module breakdown this many levels deep')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    cli.check_model_args(parser, args, 'a config file')
    try:
        build.resolve_shape(args.shape)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    build.import_project(args.import_module)
    if args.config:  # the full model of a config file
        model = build.build_model_from_config(build.load_config(args.config, args.cfg_options))
        title = f'{type(model).__name__} from {args.config}'
    else:  # a backbone
        bcfg, = cli.backbone_cfgs_from_args(args)
        model = build.build_backbone(bcfg)
        title = f'{type(model).__name__} (backbone, ' + \
            ', '.join(f'{k}={v!r}' for k, v in bcfg.items()) + ')'
    result = analyze_model(model, args.shape, batch=args.batch, in_channels=args.in_channels,
                           device=args.device, is_backbone=not args.config,
                           pad_to_divisor=not args.no_pad)
    print(report.flops_report(result, title, args.depth))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report.flops_json(result, title), f, indent=2)
    return result


if __name__ == '__main__':
    main()
