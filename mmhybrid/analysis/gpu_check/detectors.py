"""Section ``detectors``: RetinaNet, Mask R-CNN (COCO, 2 x 800 x 1333) and UperNet (ADE20K,
2 x 512 x 512) with CrossFormer-S, the configs as ``tools/train.py [--amp]`` builds them:
optimizer steps in fp32 and mixed precision, s/iter and peak memory."""
import math
import statistics
import traceback
from typing import List, Tuple

from .. import measure
from ..build import build_model_from_config, config_scope
from .common import GpuCheckOptions, error_text, free_memory, print_row, repo_path

#: (row name, config file in the checkout)
DETECTORS = [('RetinaNet CrossFormer-S', 'configs/retinanet_crossformer_s_coco.py'),
             ('Mask R-CNN CrossFormer-S', 'configs/mask_rcnn_crossformer_s_coco.py'),
             ('UperNet CrossFormer-S', 'configs/upernet_crossformer_s_ade20k.py')]
#: images per optimizer step
BATCH = 2


def training_config(config: str, amp: bool, tiny: bool):
    """The config as ``tools/train.py CONFIG [--amp]`` trains it (mixed precision set up by
    :func:`mmhybrid.engine.amp.configure_mixed_precision`), with random backbone weights, and
    the image size of the step.

    Args:
        config: the config file, relative to the checkout.
        amp: mixed precision (``--amp``).
        tiny: toy image sizes.

    Returns:
        ``(config, (h, w))``.
    """
    from mmengine.config import Config

    from ...engine.amp import AMP_WRAPPERS, configure_mixed_precision
    cfg = Config.fromfile(repo_path(config))
    if amp or (cfg.get('optim_wrapper') or {}).get('type') in AMP_WRAPPERS:
        configure_mixed_precision(cfg, explicit=amp)
    cfg.model.backbone.init_cfg = None   # random weights: what is measured is speed and memory
    seg = config_scope(cfg) == 'mmseg'
    if tiny:
        hw = (128, 128) if seg else (128, 160)
    else:
        hw = (512, 512) if seg else (800, 1333)
    if seg:
        cfg.model.data_preprocessor.size = hw
    return cfg, hw


def _timed_steps(cfg, hw: Tuple[int, int], options: GpuCheckOptions) -> dict:
    """Build the model and optimizer of ``cfg`` and time its optimizer steps on a synthetic
    batch; their losses, and the peak memory of one more step on CUDA."""
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from ..preflight import synthetic_batch
    model = build_model_from_config(cfg).to(options.device)
    # the optimizer constructor logs every parameter's decay setting: keep the output readable
    MMLogger.get_current_instance().setLevel('WARNING')
    model.init_weights()
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = synthetic_batch(model, config_scope(cfg), BATCH, hw)
    losses = []

    def step():
        losses.append(float(model.train_step(batch, wrapper)['loss']))

    times = measure.time_calls(step, options.device, options.warmup, options.iters)
    peak = None
    if measure.is_cuda(options.device):
        peak = measure.cuda_step_memory(step, options.device)['peak_bytes'] / measure.GIB
    return dict(s_per_iter=statistics.median(times) / 1000.0, peak_gib=peak, losses=losses)


def measure_detector(name: str, config: str, amp: bool, options: GpuCheckOptions) -> dict:
    """One row: a detector's (or segmentor's) optimizer steps in fp32 or mixed precision.

    Args:
        name: the row name.
        config: its config file, relative to the checkout.
        amp: mixed precision.
        options: the check's options.
    """
    row = dict(model=name, precision='AMP' if amp else 'fp32')
    try:
        cfg, hw = training_config(config, amp, options.tiny)
        row['images'] = f'{BATCH} x {hw[0]} x {hw[1]}'
        steps = _timed_steps(cfg, hw, options)
        losses = steps.pop('losses')
        row.update(steps, loss=losses[-1])
        if not all(math.isfinite(v) for v in losses):
            row['error'] = f'loss not finite: {losses}'
    except Exception as err:  # noqa: BLE001  (reported in the row, the check goes on)
        row.update(error=error_text(err), traceback=traceback.format_exc())
    free_memory(options.device)
    print_row('detectors', row)
    return row


def check_detectors(options: GpuCheckOptions) -> List[dict]:
    """The ``detectors`` section: every config of :data:`DETECTORS` in fp32, then in AMP."""
    return [measure_detector(name, config, amp, options)
            for name, config in DETECTORS for amp in (False, True)]
