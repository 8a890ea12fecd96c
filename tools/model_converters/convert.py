"""Convert an official checkpoint to an mmhybrid backbone checkpoint.

    python tools/model_converters/convert.py crossformer crossformer-s.pth checkpoints/crossformer-s_mmhybrid.pth

SRC may be a path, an http(s) URL or a model-zoo name; it is read with safe
(weights-only) loading. The converted weights must fit the family (and, with
--arch, that variant): a checkpoint of another family or variant is refused by
name. The output holds ``state_dict`` (backbone weights, project names) and
``meta``. It is written to a temporary file beside DST and then renamed, so the
input is never written over or deleted, nor an existing DST unless --force.
Exit status 2 with a one-line message on any bad input.

Backbones also load official files directly through init_cfg; converting once
makes a smaller file that needs no conversion at load time.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
import torch  # noqa: E402

import mmhybrid  # noqa: E402,F401  (registers the families)
from mmhybrid.checkpoints import (CheckpointLoadError, CheckpointMismatchError, check_state_dict,  # noqa: E402
                                  convert_for, families, identify_checkpoint, load_checkpoint_file,
                                  mismatch_message)


class ConvertError(Exception):
    """A bad input; the message is the one line the user sees."""


def backbone_class(family: str) -> type:
    """The registered backbone class of a family key."""
    return families()[family]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('family', choices=sorted(families()), help='backbone family of the checkpoint')
    parser.add_argument('src', help='official checkpoint (.pth path, URL or model-zoo name)')
    parser.add_argument('dst', help='where to write the converted checkpoint (a file name)')
    parser.add_argument('--arch', help="also check that the weights are this variant (e.g. 'small')")
    parser.add_argument('--force', action='store_true', help='overwrite an existing dst (never src)')
    parser.add_argument('--trust', action='store_true',
                        help='unpickle non-tensor objects in src (runs code in the file: only for files you trust)')
    return parser.parse_args(argv)


def check_destination(src: str, dst: str, force: bool) -> None:
    """Refuse a dst that is a directory, is the input, or exists (without ``force``)."""
    if os.path.isdir(dst):
        raise ConvertError(f'{dst} is a directory; give the name of the file to write')
    if os.path.lexists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ConvertError(f'{dst} is the input file; conversion never overwrites its input')
    if os.path.lexists(dst) and not force:
        raise ConvertError(f'{dst} exists; pass --force to overwrite it')
    folder = os.path.dirname(os.path.abspath(dst))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConvertError(f'cannot write {dst}: {folder} is not a directory')


def convert(family: str, src: str, arch=None, trust: bool = False):
    """Read, convert and check ``src``; return ``(state_dict, arch name or None)``.

    The file keeps what the converter gives (the official weights under the project's names); with
    ``--arch`` they are checked against that variant as a backbone would load them.
    """
    cls = backbone_class(family)
    ckpt = load_checkpoint_file(src, trust=trust)
    try:
        state = cls.converter(ckpt)
    except CheckpointMismatchError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ConvertError(f'{src}: {err}') from None
    if arch is not None:
        try:
            with torch.device('meta'):
                model = cls(arch=arch)
        except (TypeError, ValueError) as err:
            raise ConvertError(f'--arch: {err}') from None
        try:
            check_state_dict(model, convert_for(model, ckpt, src), source=src)
        except CheckpointMismatchError as err:
            raise ConvertError(mismatch_message(ckpt, model, src, err)) from None
        return state, model.arch_name
    fits = identify_checkpoint(ckpt)
    mine = [a for f, a in fits if f == cls.__name__]
    if not mine:
        keys = {c.__name__: key for key, c in families().items()}
        other = (f'it is a {fits[0][0]} checkpoint: convert it as {keys[fits[0][0]]}' if fits
                 else 'its keys fit none of the mmhybrid families')
        raise ConvertError(f'{src} is not a {family} checkpoint ({other})')
    return state, mine[0]


def write(state: dict, meta: dict, dst: str) -> None:
    """Save to a new temporary file in dst's folder, then rename it to dst; remove it on any failure."""
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(dst)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save({'state_dict': state, 'meta': meta}, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the result gets the usual permissions
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_destination(args.src, args.dst, args.force)
        state, arch = convert(args.family, args.src, args.arch, args.trust)
        meta = {'family': args.family, 'arch': arch, 'source': os.path.basename(args.src)}
        write(state, meta, args.dst)
    except (ConvertError, CheckpointLoadError, CheckpointMismatchError, OSError) as err:
        print(f'convert.py: error: {err}', file=sys.stderr)
        return 2
    variant = f" (arch '{arch}')" if arch else ''
    print(f'wrote {len(state)} tensors of {args.family}{variant} to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
