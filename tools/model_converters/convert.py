"""Convert an official checkpoint to an mmhybrid backbone checkpoint.

    python tools/model_converters/convert.py crossformer crossformer-s.pth checkpoints/crossformer-s_mmhybrid.pth

The output holds ``state_dict`` (backbone weights, project names) and ``meta``.
It is never written over the input, nor over an existing file unless --force.
Backbones also load official files directly through init_cfg; converting once
makes a smaller file that needs no conversion at load time.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
from mmhybrid.converters import CONVERTERS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('family', choices=sorted(CONVERTERS), help='backbone family of the checkpoint')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--force', action='store_true', help='overwrite an existing dst (never src)')
    parser.add_argument('--trust', action='store_true',
                        help='unpickle non-tensor objects in src (only for files you trust)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.src):
        print(f'error: {args.src} does not exist', file=sys.stderr)
        return 2
    if os.path.exists(args.dst) and os.path.samefile(args.src, args.dst):
        print('error: dst is the input file; conversion never overwrites its input', file=sys.stderr)
        return 2
    if os.path.exists(args.dst) and not args.force:
        print(f'error: {args.dst} exists; pass --force to overwrite it', file=sys.stderr)
        return 2
    try:
        ckpt = torch.load(args.src, map_location='cpu', weights_only=not args.trust)
    except Exception as err:  # noqa: BLE001  (reported, not hidden)
        print(f'error: cannot read {args.src} with weights_only={not args.trust}: {err}\n'
              'If the file comes from a source you trust, add --trust.', file=sys.stderr)
        return 2
    state = CONVERTERS[args.family](ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save({'state_dict': state, 'meta': {'family': args.family, 'source': os.path.basename(args.src)}}, tmp)
    os.replace(tmp, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
