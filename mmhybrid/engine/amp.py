"""Mixed precision training on a CUDA GPU or on the CPU.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU/NPU/MLU. This
wrapper is that one on an accelerator and bf16 autocast on the CPU:

* CUDA (or NPU/MLU/MUSA): exactly ``AmpOptimWrapper`` (autocast plus a
  ``GradScaler``), except that with no ``dtype`` given it picks bfloat16 where
  the GPU has it (``torch.cuda.is_bf16_supported()``) and float16 otherwise.
* CPU: ``torch.autocast('cpu', dtype=torch.bfloat16)`` around the forward pass
  and the loss, with no loss scaling (bf16 has fp32's exponent range, nothing
  underflows); only bfloat16 is accepted there.

``tools/train.py --amp`` selects it; a config can name it directly::

    optim_wrapper = dict(type='mmhybrid.MixedPrecisionOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4))

Checkpoints: ``state_dict`` holds ``loss_scaler`` only when a scaler is used;
``load_state_dict`` reads checkpoints with or without one (a GPU run resumed on
the CPU drops the scaler's state, a CPU run resumed on a GPU starts a new scaler).
"""
from contextlib import contextmanager
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..registry import OPTIM_WRAPPERS

ACCELERATORS = ('cuda', 'npu', 'mlu', 'musa')
#: the optimizer wrapper mixed precision trains with
AMP_WRAPPER = 'mmhybrid.MixedPrecisionOptimWrapper'
#: the wrapper types a config names to ask for mixed precision itself
AMP_WRAPPERS = ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper', AMP_WRAPPER)


def _as_dtype(dtype: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in AmpOptimWrapper.valid_dtypes:
        raise ValueError(f'dtype should be one of {AmpOptimWrapper.valid_dtypes} or a '
                         f'torch.dtype, got {dtype!r}')
    return getattr(torch, dtype)


def default_amp_dtype(device: str) -> torch.dtype:
    """The autocast dtype used when the config does not set one.

    Args:
        device (str): 'cuda', 'cpu', ... (mmengine's ``get_device()``).

    Returns:
        torch.dtype: bfloat16 on the CPU and on GPUs that support it, else float16.
    """
    if device == 'cuda':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == 'cpu':
        return torch.bfloat16
    return torch.float16


def check_amp_dtype(device: str, dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """The dtype mixed precision will use on ``device``, or a ``ValueError``
    (one line) saying why ``dtype`` cannot be used there.

    Args:
        device (str): 'cuda', 'cpu', ... (mmengine's ``get_device()``).
        dtype (str | torch.dtype | None): What the config asks for.

    Returns:
        torch.dtype: The autocast dtype.
    """
    dtype = _as_dtype(dtype)
    if device not in ACCELERATORS and device != 'cpu':
        raise ValueError(f'mixed precision training is not supported on {device!r}; '
                         'it needs a CUDA GPU (or NPU/MLU) or the CPU')
    if dtype is None:
        return default_amp_dtype(device)
    if device == 'cpu' and dtype != torch.bfloat16:
        raise ValueError(f'mixed precision on the CPU runs in bfloat16 only, and the config '
                         f'asks for {str(dtype).replace("torch.", "")}; use '
                         "optim_wrapper.dtype='bfloat16' (or leave it unset)")
    if device == 'cuda' and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError('this GPU does not support bfloat16; use '
                         "optim_wrapper.dtype='float16' (or leave it unset)")
    return dtype


def configure_mixed_precision(cfg, explicit: bool) -> Tuple[str, torch.dtype]:
    """Make a config train in mixed precision with :class:`MixedPrecisionOptimWrapper`, on the
    CPU or a GPU (what ``tools/train.py --amp`` does).

    The config's ``optim_wrapper.type`` becomes :data:`AMP_WRAPPER` (dynamic loss scaling by
    default when ``explicit``), and an mmdet model's heads and losses that call mmcv ops without
    bf16 kernels are swapped for their float32 versions (:mod:`mmhybrid.engine.fp32_ops`).

    Args:
        cfg (mmengine.Config): The config (changed in place).
        explicit (bool): Whether ``--amp`` asked for it (else the config names an AMP wrapper
            itself); only used in messages and for the loss scale default.

    Returns:
        tuple: The device (mmengine's ``get_device()``) and the autocast dtype.

    Raises:
        ValueError: With a one-line message, where mixed precision cannot work: another
            optimizer wrapper type, or a dtype the device does not run.
    """
    optim_wrapper = cfg.optim_wrapper
    if optim_wrapper.get('type', 'OptimWrapper') not in AMP_WRAPPERS + ('OptimWrapper',):
        raise ValueError(f'--amp replaces optim_wrapper.type, and the config sets it to '
                         f'{optim_wrapper.type!r}; remove --amp or that type')
    optim_wrapper.type = AMP_WRAPPER
    if explicit:
        optim_wrapper.setdefault('loss_scale', 'dynamic')
    device = get_device()
    try:
        dtype = check_amp_dtype(device, optim_wrapper.get('dtype'))
    except ValueError as err:
        what = '--amp' if explicit else 'the config\'s AmpOptimWrapper'
        raise ValueError(f'{what}: {err}') from None
    # mmcv's NMS, RoIAlign and sigmoid focal loss have no bf16 kernels: their float32 versions
    # (imported here: that module imports mmdet, which ``import mmhybrid`` does not)
    if cfg.get('default_scope') == 'mmdet':
        from .fp32_ops import use_fp32_ops
        use_fp32_ops(cfg.model)
    return device, dtype


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` on CUDA, bf16 autocast without loss scaling on the CPU.

    Args:
        loss_scale (float | str | dict): The ``GradScaler`` settings on an
            accelerator, as in ``AmpOptimWrapper``. Ignored on the CPU (bf16
            needs no scaling). Defaults to 'dynamic'.
        dtype (str | torch.dtype, optional): The autocast dtype. Defaults to
            None: bfloat16 on the CPU and on GPUs that support it, else float16.
            On the CPU only bfloat16 is accepted.
        use_fsdp (bool): As in ``AmpOptimWrapper`` (accelerators only).
        **kwargs: Passed to ``OptimWrapper`` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None,
                 use_fsdp: bool = False,
                 **kwargs):
        self.device_type = get_device()
        dtype = check_amp_dtype(self.device_type, dtype)
        if self.device_type in ACCELERATORS:
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
        else:
            # skip AmpOptimWrapper.__init__ (it asserts an accelerator): no scaler on the CPU
            OptimWrapper.__init__(self, **kwargs)
            self._scale_update_param = None
            self.loss_scaler = None
            self.cast_dtype = dtype

    def backward(self, loss: torch.Tensor, **kwargs):
        if self.loss_scaler is None:
            loss.backward(**kwargs)
            self._inner_count += 1
        else:
            super().backward(loss, **kwargs)

    def step(self, **kwargs):
        if self.loss_scaler is None:
            OptimWrapper.step(self, **kwargs)
        else:
            super().step(**kwargs)

    def state_dict(self) -> dict:
        if self.loss_scaler is None:
            return OptimWrapper.state_dict(self)
        return super().state_dict()

    def load_state_dict(self, state_dict: dict):
        if self.loss_scaler is None and 'loss_scaler' in state_dict:
            state_dict = dict(state_dict)
            state_dict.pop('loss_scaler')
            print_log('the checkpoint holds a loss scaler state (a float16/GPU run); '
                      'bf16 on the CPU uses no loss scaling, so it is not restored',
                      logger='current')
        if self.loss_scaler is None:
            OptimWrapper.load_state_dict(self, state_dict)
        else:
            super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        if self.device_type in ACCELERATORS:
            with super().optim_context(model):
                yield
        else:
            with OptimWrapper.optim_context(self, model), \
                    torch.autocast('cpu', dtype=self.cast_dtype):
                yield
