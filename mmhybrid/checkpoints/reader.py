"""The one way a checkpoint file enters mmhybrid: download if needed, then weights-only unpickling.

Every path that reads a checkpoint (a backbone's ``init_cfg``, the deprecated
``pretrained``, mmengine's ``load_from`` and ``resume``, ``tools/test.py``,
``tools/model_converters/convert.py``, the timm models' ``checkpoint_path`` and
``pretrained_cfg_overlay``) ends in :func:`load_checkpoint_file`:

* the name is resolved first: a local path; ``http(s)://`` (downloaded once into
  torch's hub cache, ``~/.cache/torch/hub/checkpoints``, as mmengine does);
  ``open-mmlab://``, ``torchvision://``, ``modelzoo://``, ``mmcls://`` (mmengine's
  model-zoo tables); ``s3://``/``petrel://`` and ``pavi://`` through mmengine's
  backends;
* the file is read with ``torch.load(weights_only=True)``, allowing in addition
  only the few classes that mmengine's own checkpoints hold (below), inside a
  ``torch.serialization.safe_globals`` block: nothing global is switched off;
* anything that is not a dict of weights is refused with
  :class:`CheckpointLoadError`, one line naming the file and the problem.

``import mmhybrid`` registers :func:`load_checkpoint_file` as mmengine's loader for
every scheme (:func:`install_safe_checkpoint_loaders`), so ``load_from``,
``resume`` and mmengine's ``Pretrained`` init of any module are covered too:
mmengine's own http loader unpickles with ``weights_only=False``.

What mmengine's checkpoints hold besides tensors (found by saving checkpoints with
mmengine Runners: a toy model, mmdet RetinaNet, mmseg UperNet; with and without
``save_best``):

- ``numpy._core.multiarray._reconstruct`` and ``numpy.ndarray``: numpy arrays
  (``HistoryBuffer`` histories);
- ``numpy._core.multiarray.scalar``: numpy scalars (metric values, best score);
- ``numpy.dtype`` and the dtype classes ``Float64DType``, ``Float32DType`` and
  ``Int64DType`` (the unpickler builds dtype instances only for allowlisted
  classes; no object dtype, so no pickled objects hide inside arrays);
- ``mmengine.logging.HistoryBuffer``;
- ``builtins.getattr``, which pickle uses to refer to ``HistoryBuffer.min`` (and
  ``max``, ``current``, ``mean``). It is bound to :func:`_history_buffer_getattr`,
  which resolves only those four names, not to the builtin.

The numpy functions are also allowed under their numpy 1.x names
(``numpy.core.multiarray.*``), the names that checkpoints saved with numpy < 2 use.
"""
import io
import os
import os.path as osp
import pickle
import re
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Union

import numpy as np
import torch

from .errors import CheckpointLoadError, CheckpointNotFoundError

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray

_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling a checkpoint.

    Args:
        obj (type): The object whose attribute the pickle asks for; only
            ``HistoryBuffer`` is accepted.
        name (str): The attribute name; only HistoryBuffer's statistics methods
            are accepted.

    Returns:
        Callable: The unbound method ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or name.
    """
    from pickle import UnpicklingError

    from mmengine.logging import HistoryBuffer
    if obj is not HistoryBuffer or name not in _HISTORY_BUFFER_METHODS:
        raise UnpicklingError(
            f'checkpoint asks for getattr({obj!r}, {name!r}); only the statistics '
            f'methods {_HISTORY_BUFFER_METHODS} of HistoryBuffer are allowed')
    return getattr(HistoryBuffer, name)


def mmengine_checkpoint_safe_globals():
    """The classes and functions that mmengine checkpoints need besides tensors.

    Returns:
        list: Classes and functions, and ``(callable, name)`` pairs for the ones
        allowed under a name other than their own, in the format of
        ``torch.serialization.add_safe_globals``.
    """
    from mmengine.logging import HistoryBuffer
    safe_globals = [
        np.ndarray,
        np.dtype,
        np.dtypes.Float64DType,
        np.dtypes.Float32DType,
        np.dtypes.Int64DType,
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
    ]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        safe_globals += [
            (_np_multiarray._reconstruct, f'{module}._reconstruct'),
            (_np_multiarray.scalar, f'{module}.scalar'),
        ]
    return safe_globals


#: mmengine's checkpoint schemes, all served by :func:`load_checkpoint_file`
SCHEMES = ('', 'http://', 'https://', 'open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://',
           'mmcls://', 'pavi://', r'(\S+\:)?s3://', r'(\S+\:)?petrel://')
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_MAGIC = b'\x80'  # torch.save's legacy format starts with a pickle protocol 2 opcode


def _first_line(err: BaseException) -> str:
    """``Type: first sentence`` of an exception, for one-line messages."""
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return f'{type(err).__name__}: {text[0].split(". ")[0].rstrip(".")}'


def _download(url: str, name: str) -> str:
    """Download ``url`` once into torch's hub cache (rank 0 first when distributed); return the path."""
    import torch.distributed as dist
    from torch.hub import download_url_to_file, get_dir
    from urllib.parse import urlparse
    cache = osp.join(get_dir(), 'checkpoints')
    path = osp.join(cache, osp.basename(urlparse(url).path) or 'checkpoint.pth')
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    for turn in ((0, 1) if distributed else (0, )):
        if (rank == 0) == (turn == 0) and not osp.isfile(path):
            os.makedirs(cache, exist_ok=True)
            try:
                download_url_to_file(url, path, progress=False)
            except Exception as err:  # noqa: BLE001  (URLError, HTTPError, timeouts: one line)
                raise CheckpointLoadError(f'{name}: cannot download {url}: {_first_line(err)}. Check the URL and '
                                          'the network, or download the file and give its local path.') from None
        if distributed and turn == 0:
            dist.barrier()
    return path


def _zoo_url(name: str) -> str:
    """The URL (or file under mmengine's home) that a model-zoo name stands for."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    scheme, model = name.split('://', 1)
    if scheme in ('torchvision', 'modelzoo'):
        table = mmengine_checkpoint.get_torchvision_models()
    elif scheme == 'mmcls':
        table = mmengine_checkpoint.get_mmcls_models()
    else:
        table = mmengine_checkpoint.get_external_models()
        model = mmengine_checkpoint.get_deprecated_model_names().get(model, model)
    if model not in table:
        raise CheckpointNotFoundError(f'{name}: {scheme}:// has no model named {model!r}.')
    url = table[model]
    if url.startswith(('http://', 'https://')):
        return url
    return osp.join(mmengine_checkpoint._get_mmengine_home(), url)


def _fetch(name: str) -> Union[str, bytes]:
    """Resolve a checkpoint name to a local path (or, for object stores, the file's bytes)."""
    if name.startswith(('open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://', 'mmcls://')):
        target = _zoo_url(name)
        return _download(target, name) if target.startswith(('http://', 'https://')) else target
    if name.startswith(('http://', 'https://')):
        return _download(name, name)
    if name.startswith('pavi://'):
        from tempfile import mkdtemp
        try:
            from pavi import modelcloud
        except ImportError:
            raise CheckpointLoadError(f'{name}: pavi:// needs the pavi package.') from None
        model = modelcloud.get(name[len('pavi://'):])
        path = osp.join(mkdtemp(), model.name)
        model.download(path)
        return path
    if re.match(r'(\S+\:)?(s3|petrel)://', name):
        from mmengine.fileio import get_file_backend
        try:
            return get_file_backend(name, backend_args={'backend': 'petrel'}).get(name)
        except Exception as err:  # noqa: BLE001
            raise CheckpointLoadError(f'{name}: cannot fetch: {_first_line(err)}') from None
    return osp.expanduser(name)


def _check_local_file(path: str, name: str) -> None:
    if not osp.exists(path):
        raise CheckpointNotFoundError(f'{name}: no such file. Download the checkpoint (README, "Pretrained '
                                      'weights") or fix the path.')
    if osp.isdir(path):
        raise CheckpointLoadError(f'{name}: is a directory, not a checkpoint file; give the .pth file in it.')
    if osp.getsize(path) == 0:
        raise CheckpointLoadError(f'{name}: the file is empty (0 bytes); download it again.')
    with open(path, 'rb') as f:
        start = f.read(4)
    if not (start.startswith(_ZIP_MAGIC) or start.startswith(_PICKLE_MAGIC) or path.endswith('.safetensors')):
        raise CheckpointLoadError(f'{name}: not a PyTorch checkpoint (it starts with {start!r}; files written by '
                                  'torch.save are zip archives). Is it an HTML error page or a text file?')


def _refusal(source, name: str) -> str:
    unsafe = []
    if isinstance(source, str):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(source)
        except Exception:  # noqa: BLE001  (legacy format: no list, the message stays general)
            unsafe = []
    what = f'the objects {", ".join(unsafe)}' if unsafe else 'Python objects'
    return (f'{name}: refused by safe (weights-only) loading: it pickles {what} besides tensors, which could run '
            'code when unpickled. Only if you trust its source, convert it once with '
            f'`python tools/model_converters/convert.py FAMILY {name} OUT --trust` and load OUT.')


def load_checkpoint_file(filename: str, map_location='cpu', trust: bool = False) -> dict:
    """Read a checkpoint (local path, URL or model-zoo name) safely; the only checkpoint reader of mmhybrid.

    Args:
        filename (str): A path, an ``http(s)://`` URL, or a name with one of
            mmengine's schemes (``open-mmlab://``, ``torchvision://``, ...).
        map_location: As in :func:`torch.load`. Default: 'cpu'.
        trust (bool): Unpickle any object (``weights_only=False``) for this one
            call; only ``tools/model_converters/convert.py --trust`` passes it.

    Returns:
        dict: What the file holds.

    Raises:
        CheckpointLoadError: One line naming the file and what is wrong (missing,
            a directory, empty, not a checkpoint, truncated, objects other than
            weights, not a dict).
    """
    name = str(filename)
    source = _fetch(name)
    try:
        return _read(source, name, map_location, trust)
    except CheckpointLoadError as err:
        if isinstance(source, str) and name.startswith(('http://', 'https://', 'open-mmlab://', 'openmmlab://',
                                                        'torchvision://', 'modelzoo://', 'mmcls://')):
            raise type(err)(f'{err} (downloaded copy: {source}; delete it to download again)') from None
        raise


def _read(source: Union[str, bytes], name: str, map_location, trust: bool) -> dict:
    if isinstance(source, str):
        _check_local_file(source, name)
        if source.endswith('.safetensors'):
            from safetensors.torch import load_file
            try:
                return load_file(source, device=str(map_location))
            except Exception as err:  # noqa: BLE001
                raise CheckpointLoadError(f'{name}: not a readable safetensors file ({_first_line(err)}).') from None
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    allow = nullcontext() if trust else torch.serialization.safe_globals(mmengine_checkpoint_safe_globals())
    try:
        with allow:
            ckpt = torch.load(stream, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' in str(err) or 'Unsupported global' in str(err):
            raise CheckpointLoadError(_refusal(source, name)) from None
        raise CheckpointLoadError(f'{name}: not a PyTorch checkpoint ({_first_line(err)}).') from None
    except (EOFError, RuntimeError) as err:
        raise CheckpointLoadError(f'{name}: truncated or corrupt ({_first_line(err)}); download it again.') from None
    except Exception as err:  # noqa: BLE001  (anything torch.load raises: one line, not a traceback)
        raise CheckpointLoadError(f'{name}: cannot be read ({_first_line(err)}).') from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointLoadError(f'{name}: holds a {type(ckpt).__name__}, not a checkpoint (a dict of weights, '
                                  'or a dict holding one under state_dict/model).')
    if name.startswith('mmcls://'):
        from mmengine.runner.checkpoint import _process_mmcls_checkpoint
        ckpt = _process_mmcls_checkpoint(ckpt)
    return ckpt


def _mmengine_loader(filename, map_location=None):
    return load_checkpoint_file(filename, map_location=map_location)


def install_safe_checkpoint_loaders() -> None:
    """Make :func:`load_checkpoint_file` mmengine's loader for every checkpoint scheme.

    Afterwards mmengine's ``load_from``, ``resume`` and ``Pretrained`` init read
    files the same way as mmhybrid's backbones. Called by ``import mmhybrid``;
    calling it again changes nothing.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    _mmengine_loader.__name__ = 'load_from_mmhybrid_safe'  # mmengine logs the name after 'load_from_'
    CheckpointLoader.register_scheme(prefixes=list(SCHEMES), loader=_mmengine_loader, force=True)
