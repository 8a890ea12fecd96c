"""Check one install step of the project's environment, with a message that says what to do.

Usage: python tools/misc/check_env.py {torch,mmcv,all}
"""
import importlib
import sys


def fail(msg: str) -> None:
    print(f'[mmhybrid install] {msg}', file=sys.stderr)
    sys.exit(1)


def check_torch() -> None:
    import torch
    if '+cpu' in torch.__version__:
        fail(f'torch {torch.__version__} is the CPU-only build; it has no matching '
             'torchvision, so timm cannot import. Remove .venv and run make again '
             '(the Makefile takes the registry build).')
    import torchvision  # noqa: F401  (fails with "operator torchvision::nms does not exist" on a bad pair)
    print(f'torch {torch.__version__}, torchvision {torchvision.__version__}: ok')


def check_mmcv() -> None:
    import mmcv
    try:
        from mmcv.ops import nms, roi_align  # noqa: F401
        importlib.import_module('mmcv._ext')
    except ImportError as err:
        fail(f'mmcv {mmcv.__version__} has no compiled ops ({err}). Rebuild it with '
             'MMCV_WITH_OPS=1 and --no-build-isolation (see README, "Install").')
    print(f'mmcv {mmcv.__version__} with compiled ops: ok')


def check_all() -> None:
    check_torch()
    check_mmcv()
    for name in ('mmengine', 'mmdet', 'mmseg', 'timm', 'mmhybrid'):
        mod = importlib.import_module(name)
        print(f'{name} {getattr(mod, "__version__", "?")}: ok')


if __name__ == '__main__':
    step = sys.argv[1] if len(sys.argv) > 1 else 'all'
    {'torch': check_torch, 'mmcv': check_mmcv, 'all': check_all}[step]()
