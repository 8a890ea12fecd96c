"""Check one install step of the project's environment, with a message that says what to do.

Usage: python tools/misc/check_env.py {torch,cuda-build,mmcv,all}

``cuda-build`` (run by ``make install`` before building mmcv when ``FORCE_CUDA=1``) finds
nvcc (``CUDA_HOME``, then ``PATH``, then ``/usr/local/cuda*``), checks that its CUDA
version is torch's, compiles a small kernel for every architecture of
``TORCH_CUDA_ARCH_LIST`` (default below), finds the CUDA libraries' headers that torch's
CUDA headers include (in the toolkit, else in the NVIDIA wheels torch installed: a toolkit
of the compiler and runtime alone lacks them) and checks with the preprocessor that
``ATen/cuda/CUDAContext.h`` resolves, then prints the ``export`` lines the build uses. It
needs no GPU.
"""
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

#: GPUs people train on: A100, A10/RTX 30, L4/L40/RTX 40, H100/H200, B200, RTX 50 (+ PTX for later ones)
DEFAULT_CUDA_ARCHS = '8.0;8.6;8.9;9.0;10.0;12.0+PTX'


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


def find_nvcc() -> str:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, then ``PATH``, then the newest ``/usr/local/cuda*``."""
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if home:
        nvcc = os.path.join(home, 'bin', 'nvcc')
        if not os.access(nvcc, os.X_OK):
            fail(f'CUDA_HOME={home} has no bin/nvcc. Point CUDA_HOME at a CUDA toolkit, or unset it to '
                 'search PATH and /usr/local/cuda*.')
        return nvcc
    found = shutil.which('nvcc')
    if found:
        return found
    for cand in ['/usr/local/cuda/bin/nvcc'] + sorted(glob.glob('/usr/local/cuda-*/bin/nvcc'), reverse=True):
        if os.access(cand, os.X_OK):
            return cand
    import torch
    fail('FORCE_CUDA=1 needs the CUDA toolkit compiler nvcc, found neither in CUDA_HOME, PATH nor '
         f'/usr/local/cuda*. Install the CUDA {torch.version.cuda} toolkit (the version of this torch) and set '
         'CUDA_HOME, or leave FORCE_CUDA unset to build the CPU ops.')


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, '--version'], capture_output=True, text=True).stdout
    match = re.search(r'release (\d+\.\d+)', out)
    if not match:
        fail(f'{nvcc} --version does not say its CUDA release: {out.strip()[-200:]!r}')
    return match.group(1)


def toolkit_home(nvcc: str) -> str:
    """The toolkit folder of ``nvcc`` (holding ``include/cuda.h``), also when ``nvcc`` is a wrapper script
    outside it (torch would otherwise take the folder above the wrapper's)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'empty.cu')
        open(src, 'w').close()
        out = subprocess.run([nvcc, '--dryrun', '-c', src], capture_output=True, text=True, cwd=tmp)
    match = re.search(r'_HERE_=(\S+)', out.stdout + out.stderr)
    bin_dir = match.group(1) if match else os.path.dirname(os.path.realpath(nvcc))
    home = os.path.dirname(os.path.normpath(bin_dir))
    if not os.path.exists(os.path.join(home, 'include', 'cuda.h')):
        fail(f'found {nvcc}, but no CUDA headers in {home}/include. Set CUDA_HOME to the CUDA toolkit folder.')
    return home


def gencode_flags(archs: str) -> list:
    """``-gencode`` flags for a TORCH_CUDA_ARCH_LIST such as ``8.0;9.0+PTX``."""
    flags = []
    for arch in re.split(r'[;\s]+', archs.strip()):
        if not arch:
            continue
        match = re.fullmatch(r'(\d+)\.(\d+)(a|f)?(\+PTX)?', arch)
        if not match:
            fail(f'TORCH_CUDA_ARCH_LIST entry {arch!r} is not of the form 8.6 or 9.0+PTX.')
        num = match.group(1) + match.group(2) + (match.group(3) or '')
        flags.append(f'-gencode=arch=compute_{num},code=sm_{num}')
        if match.group(4):
            flags.append(f'-gencode=arch=compute_{num},code=compute_{num}')
    return flags


#: headers of the CUDA libraries that torch's ``ATen/cuda/CUDAContextLight.h`` includes (every mmcv op does)
LIBRARY_HEADERS = ('cusparse.h', 'cublas_v2.h', 'cublasLt.h', 'cusolverDn.h')


def library_include_dirs(home: str) -> list:
    """Folders for ``CPATH`` that hold the :data:`LIBRARY_HEADERS` the toolkit at ``home`` lacks, taken from
    the NVIDIA wheels torch depends on (``site-packages/nvidia/cu13/include``, or ``nvidia/<library>/include``
    in the per-library layout of earlier CUDA versions); ``[]`` when the toolkit has them all."""
    missing = [h for h in LIBRARY_HEADERS if not os.path.exists(os.path.join(home, 'include', h))]
    if not missing:
        return []
    try:
        import nvidia
        candidates = sorted(d for base in nvidia.__path__ for d in glob.glob(os.path.join(base, '*', 'include')))
    except ImportError:
        candidates = []
    dirs = []
    for header in missing:
        found = next((d for d in candidates if os.path.exists(os.path.join(d, header))), None)
        if found is None:
            fail(f'the CUDA toolkit at {home} has no {header} (CUDA library headers), and no NVIDIA wheel of '
                 f'torch has it either. Install the CUDA libraries\' development headers (e.g. the '
                 f'cuda-libraries-dev package of this CUDA version) or point CUDA_HOME at a full toolkit.')
        if found not in dirs:
            dirs.append(found)
    return dirs


def check_torch_cuda_headers(nvcc: str, include_dirs: list) -> None:
    """Preprocess ``#include <ATen/cuda/CUDAContext.h>`` as the extension build will (torch's include
    folders, ``include_dirs`` on ``CPATH``): a missing header shows here in seconds, not in the build."""
    env = dict(os.environ)
    os.environ['CUDA_HOME'] = toolkit_home(nvcc)   # read by cpp_extension on import
    from torch.utils.cpp_extension import include_paths
    if include_dirs:
        env['CPATH'] = os.pathsep.join(include_dirs + ([env['CPATH']] if env.get('CPATH') else []))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'aten_probe.cu')
        with open(src, 'w') as f:
            f.write('#include <ATen/cuda/CUDAContext.h>\n')
        flags = [f'-I{d}' for d in include_paths(device_type='cuda')]
        proc = subprocess.run([nvcc, '-E', '-std=c++17', *flags, src, '-o', os.devnull],
                              capture_output=True, text=True, env=env)
    if proc.returncode:
        errors = [ln for ln in (proc.stderr or proc.stdout).splitlines() if 'error' in ln] or ['(no message)']
        fail(f'{nvcc} cannot compile torch\'s CUDA headers: {errors[0].strip()}. Install the missing CUDA '
             'headers or point CUDA_HOME at a full toolkit.')


def check_cuda_build() -> None:
    import torch
    if torch.version.cuda is None:
        fail(f'FORCE_CUDA=1, but torch {torch.__version__} is built without CUDA. Install a CUDA build '
             'of torch (requirements/torch.txt takes the registry build, cu130) and run make again.')
    nvcc = find_nvcc()
    version = nvcc_version(nvcc)
    if version.split('.')[0] != torch.version.cuda.split('.')[0]:
        fail(f'{nvcc} is CUDA {version}, torch {torch.__version__} is built with CUDA {torch.version.cuda}: '
             'mmcv\'s CUDA ops would not load. Install the CUDA {0} toolkit and point CUDA_HOME at it.'
             .format(torch.version.cuda))
    if version != torch.version.cuda:
        print(f'[mmhybrid install] note: nvcc is CUDA {version}, torch was built with {torch.version.cuda} '
              '(same major version: this works)', file=sys.stderr)
    archs = os.environ.get('TORCH_CUDA_ARCH_LIST') or DEFAULT_CUDA_ARCHS
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'probe.cu')
        with open(src, 'w') as f:
            f.write('__global__ void probe(float *x) { x[threadIdx.x] *= 2.f; }\n')
        proc = subprocess.run([nvcc, '-c', src, '-o', os.path.join(tmp, 'probe.o'), *gencode_flags(archs)],
                              capture_output=True, text=True)
        if proc.returncode:
            fail(f'{nvcc} (CUDA {version}) cannot compile for TORCH_CUDA_ARCH_LIST="{archs}": '
                 f'{(proc.stderr or proc.stdout).strip().splitlines()[-1]}. Set TORCH_CUDA_ARCH_LIST to '
                 'architectures this toolkit supports.')
    home = toolkit_home(nvcc)
    include_dirs = library_include_dirs(home)
    check_torch_cuda_headers(nvcc, include_dirs)
    print(f'[mmhybrid install] nvcc {nvcc} (CUDA {version}, torch CUDA {torch.version.cuda}); '
          f'building for {archs}', file=sys.stderr)
    if include_dirs:
        print(f'[mmhybrid install] {home} lacks CUDA library headers; using those of torch\'s NVIDIA wheels: '
              + ', '.join(include_dirs), file=sys.stderr)
    print(f'export CUDA_HOME={home}')
    print(f"export TORCH_CUDA_ARCH_LIST='{archs}'")
    if include_dirs:
        print(f'export CPATH={os.pathsep.join(include_dirs)}${{CPATH:+:$CPATH}}')


def check_mmcv() -> None:
    import mmcv
    try:
        from mmcv.ops import get_compiling_cuda_version, nms, roi_align  # noqa: F401
        importlib.import_module('mmcv._ext')
    except ImportError as err:
        fail(f'mmcv {mmcv.__version__} has no compiled ops ({err}). Rebuild it with '
             'MMCV_WITH_OPS=1 and --no-build-isolation (see README, "Install").')
    cuda = get_compiling_cuda_version()
    if os.environ.get('FORCE_CUDA') == '1' and cuda == 'not available':
        fail(f'FORCE_CUDA=1, but the installed mmcv {mmcv.__version__} has CPU ops only (a prebuilt CPU '
             'wheel was taken from PIP_FIND_LINKS or .wheels/?). Remove it from there and run make again.')
    print(f'mmcv {mmcv.__version__} with compiled ops (CUDA: {cuda}): ok')


def check_all() -> None:
    check_torch()
    check_mmcv()
    for name in ('mmengine', 'mmdet', 'mmseg', 'timm', 'onnx', 'onnxscript', 'onnxruntime', 'mmhybrid'):
        mod = importlib.import_module(name)
        print(f'{name} {getattr(mod, "__version__", "?")}: ok')


if __name__ == '__main__':
    step = sys.argv[1] if len(sys.argv) > 1 else 'all'
    {'torch': check_torch, 'cuda-build': check_cuda_build, 'mmcv': check_mmcv, 'all': check_all}[step]()
