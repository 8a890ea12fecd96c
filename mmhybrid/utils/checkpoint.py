"""Let ``torch.load(weights_only=True)`` read the checkpoints that mmengine saves.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. mmengine 0.10.7
never passes ``weights_only``, so loading one of its own checkpoints (``--resume``,
``load_from``, ``tools/test.py``) fails: besides tensors, such a checkpoint holds the
message hub's ``HistoryBuffer`` objects, which carry numpy arrays and numpy scalars.

:func:`allow_mmengine_checkpoints` allowlists exactly what those checkpoints
contain, found by saving checkpoints with mmengine Runners (a toy model, mmdet
RetinaNet, mmseg UperNet; with and without ``save_best``) and loading them back
with ``weights_only=True``:

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
The global switch ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` stays off.
"""
import numpy as np
import torch

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
    """List what :func:`allow_mmengine_checkpoints` registers.

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


def allow_mmengine_checkpoints():
    """Allow ``torch.load(weights_only=True)`` to read mmengine-saved checkpoints.

    Registers :func:`mmengine_checkpoint_safe_globals` with
    ``torch.serialization.add_safe_globals``. Idempotent: the registry is a set,
    so calling it again adds nothing.
    """
    torch.serialization.add_safe_globals(mmengine_checkpoint_safe_globals())
