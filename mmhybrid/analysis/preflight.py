"""The check to run before queueing a training job: ``tools/misc/preflight.py CONFIG``.

:func:`run_preflight` builds the model of a config as ``tools/train.py`` does, loads its
pretrained file when it is there, and runs one training step (the config's optimizer) on a
synthetic batch at the config's training size. It reports, one line each:

- trainable parameters that get no gradient in the step: under DistributedDataParallel with
  ``find_unused_parameters=False`` (mmengine's default) such a job stops at its second
  iteration ("Expected to have finished reduction in the prior iteration");
- whether the backbone's returned channels are what the neck or decode head reads;
- whether the dataset and pretrained files exist, where the config expects them, and whether
  the dataset's categories are the config's classes;
- the batch per iteration on N GPUs and the learning rate ``--auto-scale-lr`` would give;
- the step's peak memory (CUDA allocator on a GPU, RSS increase on the CPU) and its time.

``tiny=True`` runs the same config with the family's small ``test_arch`` (every other backbone
option as the config says) at a small size: the gradient contract in seconds (the test suite).
"""
import contextlib
import copy
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.config import config_dicts
from ..utils.launch import compact_names
from ..utils.datasets import (DATALOADER_EVALUATORS, DatasetClassesError, check_dataset_classes,
                              missing_dataset_paths)
from .build import config_scope, import_project
from .measure import GIB, cpu_step_memory, cuda_step_memory, release_free_memory

__all__ = ['Check', 'run_preflight', 'tiny_config', 'training_shape', 'trainable_without_grad']

#: the image side of ``tiny`` runs (not a multiple of 32: any-size input is part of the contract)
TINY_SHAPE = (120, 150)
#: how many boxes each synthetic detection image holds
NUM_BOXES = 5


@dataclass
class Check:
    """One line of the report.

    Args:
        status: 'ok', 'info', 'warn' or 'FAIL' (a FAIL makes the tool exit 1).
        topic: what was checked.
        text: the finding.
    """
    status: str
    topic: str
    text: str

    def line(self) -> str:
        return f'[{self.status:>4}] {self.topic}: {self.text}'


# ---------------------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------------------

def _backbone_class(cfg):
    """The registered mmhybrid family of ``cfg.model.backbone``, or None for another backbone."""
    from ..models.base import HybridBackbone
    from ..registry import MODELS
    backbone_type = cfg.model.backbone.get('type', '')
    if not isinstance(backbone_type, str) or not backbone_type.startswith('mmhybrid.'):
        return None
    cls = MODELS.get(backbone_type.split('.', 1)[1])
    return cls if isinstance(cls, type) and issubclass(cls, HybridBackbone) else None


def backbone_channels(cfg) -> List[int]:
    """The channels of the maps ``cfg.model.backbone`` returns, built on the meta device (no memory)."""
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(config_scope(cfg))
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    with torch.device('meta'):
        backbone = ROOT_MODELS.build(backbone_cfg)
    return list(backbone.out_channels)


def _readers(cfg) -> List[Tuple[str, List[int], object]]:
    """``(config key, channels it reads, in_index)`` of what reads the backbone's maps: the neck
    (``in_index`` None: every map), or a segmentor's decode and auxiliary heads."""
    neck = cfg.model.get('neck')
    if neck is not None:
        return [('model.neck.in_channels', list((neck[0] if isinstance(neck, list) else neck).in_channels), None)]
    readers = []
    for key in ('decode_head', 'auxiliary_head'):
        heads = cfg.model.get(key)
        for i, head in enumerate(heads if isinstance(heads, list) else [heads] if heads else []):
            where = f'model.{key}' + (f'.{i}' if isinstance(heads, list) else '')
            channels = head.in_channels
            channels = list(channels) if isinstance(channels, (list, tuple)) else [channels]
            readers.append((f'{where}.in_channels', channels, head.get('in_index', -1)))
    return readers


def _expected(channels: List[int], in_index) -> List[int]:
    """The channels a reader with ``in_index`` should read from maps of ``channels``."""
    if in_index is None:
        return channels
    return [channels[i] for i in in_index] if isinstance(in_index, (list, tuple)) else [channels[in_index]]


def wire_to_backbone(cfg) -> None:
    """Set the neck's (or the decode heads') ``in_channels`` to what the backbone returns, in place."""
    channels = backbone_channels(cfg)
    for key, _, in_index in _readers(cfg):
        want = _expected(channels, in_index)
        node = cfg
        *path, last = key.split('.')
        for part in path:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = want if isinstance(node[last], (list, tuple)) else want[0]


def _fewer_proposals(cfg) -> None:
    """Two-stage detectors: 100 proposals and 64 sampled RoIs per image (the same heads and code paths
    at a fraction of the cost of 1000-2000 proposals and 512 RoIs)."""
    train_cfg = cfg.model.get('train_cfg') or {}
    if 'rpn_proposal' in train_cfg:
        train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        for stage in train_cfg.rcnn if isinstance(train_cfg.rcnn, list) else [train_cfg.rcnn]:
            stage.sampler.num = 64
        cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)


def tiny_config(cfg):
    """The config with its family's small ``test_arch`` in place of its arch, every other backbone
    option kept, the neck or heads wired to the new widths, and fewer proposals.

    Args:
        cfg (mmengine.Config): A config whose backbone is an mmhybrid family.

    Returns:
        mmengine.Config: A changed copy.
    """
    cls = _backbone_class(cfg)
    if cls is None or cls.test_arch is None:
        raise ValueError(f'--tiny needs an mmhybrid backbone with a test_arch; the config has '
                         f'{cfg.model.backbone.get("type")!r}')
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.arch = copy.deepcopy(cls.test_arch)
    wire_to_backbone(cfg)
    _fewer_proposals(cfg)
    if cfg.model.get('data_preprocessor', {}).get('size') is not None:
        cfg.model.data_preprocessor.size = TINY_SHAPE   # mmseg pads each crop to this size
    return cfg


def training_shape(cfg) -> Tuple[int, int]:
    """The largest (H, W) a training image has after the config's pipeline: an mmseg crop
    (``data_preprocessor.size`` / ``crop_size``), or the largest resize scale of an mmdet pipeline
    (``scale=(long, short)``: a landscape image at both bounds), padded to the size divisor.

    Args:
        cfg (mmengine.Config): The config.
    """
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('size') is not None:
        return tuple(preprocessor['size'])
    if cfg.get('crop_size') is not None:
        return tuple(cfg.crop_size)
    scales = []
    for node in config_dicts(cfg.get('train_dataloader', {}).get('dataset', {})):
        for key in ('scale', 'scales'):
            value = node.get(key)
            if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
                scales += [tuple(v) for v in value]
            elif isinstance(value, (list, tuple)) and len(value) == 2:
                scales.append(tuple(value))
    if not scales:
        raise ValueError('no training size found in the config (no Resize scale, crop_size or '
                         'data_preprocessor.size): pass --shape H W')
    long_side = max(max(s) for s in scales)
    short_side = max(min(s) for s in scales)
    divisor = preprocessor.get('pad_size_divisor') or 1
    return tuple(-(-side // divisor) * divisor for side in (short_side, long_side))


# ---------------------------------------------------------------------------------------
# the model and one step
# ---------------------------------------------------------------------------------------

def trainable_without_grad(model: nn.Module, step: Callable[[], object]) -> List[str]:
    """The trainable parameters of ``model`` that get no gradient when ``step`` runs.

    A parameter counts as reached when autograd accumulates a gradient into it (what
    DistributedDataParallel's reducer waits for), zero or not.

    Args:
        model: the model.
        step: runs one forward and backward (and may step the optimizer).
    """
    reached = set()
    handles = [p.register_post_accumulate_grad_hook(lambda _p, name=name: reached.add(name))
               for name, p in model.named_parameters() if p.requires_grad]
    try:
        step()
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, p in model.named_parameters() if p.requires_grad and name not in reached]


def _num_classes(model: nn.Module) -> int:
    for path in ('bbox_head', 'roi_head.bbox_head', 'decode_head'):
        module = model
        for part in path.split('.'):
            module = getattr(module, part, None)
        if isinstance(module, (nn.ModuleList, list)):
            module = module[0]
        if module is not None and hasattr(module, 'num_classes'):
            return int(module.num_classes)
    return 10


def synthetic_batch(model: nn.Module, scope: str, batch: int, hw: Tuple[int, int]) -> dict:
    """A training batch of random images and labels at ``hw``: boxes (and masks for Mask R-CNN) for
    mmdet detectors, label maps with an ignored band for mmseg segmentors.

    Args:
        model: the detector or segmentor (its head's number of classes bounds the labels).
        scope: 'mmdet' or 'mmseg'.
        batch: images in the batch.
        hw: their size.
    """
    num_classes, (h, w) = _num_classes(model), hw
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        return demo_mm_inputs(batch_size=batch, image_shapes=[(3, h, w)] * batch, num_items=[NUM_BOXES] * batch,
                              num_classes=num_classes, with_mask=bool(getattr(model, 'with_mask', False)))
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        label = torch.randint(0, num_classes, (1, h, w), generator=gen)
        label[:, :max(1, h // 20)] = 255   # an ignored band, as real label maps have
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_training_model(cfg, device, load_weights: bool) -> Tuple[nn.Module, str]:
    """The model as ``tools/train.py``'s Runner builds it: initialised, its pretrained file loaded when
    ``load_weights`` (else random), converted to SyncBatchNorm when ``cfg.sync_bn`` is set (in one
    process those layers compute as BatchNorm), on ``device``.

    Returns:
        ``(model, what happened to the pretrained weights)``.
    """
    from mmengine.model import convert_sync_batchnorm
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope(config_scope(cfg))
    model_cfg = copy.deepcopy(cfg.model)
    init_cfg = model_cfg.backbone.get('init_cfg') or {}
    if not load_weights:
        model_cfg.backbone.init_cfg = None
    model = ROOT_MODELS.build(model_cfg)
    model.init_weights()
    weights = f'loaded {init_cfg.get("checkpoint")}' if load_weights and init_cfg else 'random'
    if cfg.get('sync_bn'):
        model = convert_sync_batchnorm(model, cfg.sync_bn)
    return model.to(device), weights


def timed_training_steps(model, optim_wrapper, data: dict, device, steps: int) -> Dict[str, object]:
    """Run ``steps`` training steps (``model.train_step``, the optimizer included): the first records
    which trainable parameters got no gradient and the peak memory, the others are timed.

    Returns:
        dict with ``unused`` (parameter names), ``memory`` (:func:`cpu_step_memory` /
        :func:`cuda_step_memory`), ``seconds`` (per later step, or the first when ``steps`` is 1)
        and ``loss``.
    """
    record: Dict[str, object] = {}

    def step():
        record['loss'] = float(model.train_step(data, optim_wrapper)['loss'].detach())

    def first():
        t0 = time.perf_counter()
        record['unused'] = trainable_without_grad(model, step)
        _sync(device)
        record['first'] = time.perf_counter() - t0

    model.train()
    record['memory'] = (cuda_step_memory(first, device) if torch.device(device).type == 'cuda'
                        else cpu_step_memory(first))
    times = []
    for _ in range(steps - 1):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    record['seconds'] = statistics.median(times) if times else record['first']
    return record


def _sync(device) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------

def check_channels(cfg) -> List[Check]:
    """Whether the neck / decode heads read the channels the backbone returns."""
    try:
        channels = backbone_channels(cfg)
    except Exception as err:  # noqa: BLE001  (reported as the finding)
        return [Check('FAIL', 'backbone', f'cannot be built: {type(err).__name__}: {err}')]
    checks = []
    for key, configured, in_index in _readers(cfg):
        want = _expected(channels, in_index)
        if configured == want:
            checks.append(Check('ok', 'channels', f'{key} = {configured} matches the backbone\'s maps {channels}'))
        else:
            checks.append(Check('FAIL', 'channels', f'the backbone returns {channels} channels '
                                f'(out_indices {cfg.model.backbone.get("out_indices", "all")}) but {key} = '
                                f'{configured}: set {key}={want}'))
    return checks


def check_files(cfg) -> List[Check]:
    """Whether the datasets, their classes and the pretrained / load_from files are where the config
    expects them (a missing file is a warning: the login node may not see the cluster's storage)."""
    loaders = [k for k in DATALOADER_EVALUATORS if cfg.get(k) is not None]
    missing = missing_dataset_paths(cfg, loaders)
    checks = [Check('warn', 'dataset', f'{path} not found (set by {key}); the job stops there unless it exists '
                    'on the training machines') for key, path in missing]
    if not missing:
        checks.append(Check('ok', 'dataset', 'every file the dataloaders read exists'))
        try:
            checks += [Check('warn', 'dataset', text) for text in check_dataset_classes(cfg, loaders)]
        except DatasetClassesError as err:
            checks.append(Check('FAIL', 'dataset', str(err)))
    for key, path in _weight_files(cfg):
        import os.path as osp
        found = '://' in path or osp.isfile(path)
        checks.append(Check('ok' if found else 'warn', 'weights',
                            f'{path} ({key}) ' + ('found' if found else 'not found: the job stops there; '
                                                  'the step below runs with random weights')))
    return checks


def _weight_files(cfg) -> List[Tuple[str, str]]:
    files = []
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg') or {}
    if isinstance(init_cfg, dict) and init_cfg.get('checkpoint'):
        files.append(('model.backbone.init_cfg.checkpoint', init_cfg['checkpoint']))
    if cfg.get('load_from'):
        files.append(('load_from', cfg.load_from))
    return files


def check_batch(cfg, gpus: int) -> List[Check]:
    """The images per iteration on ``gpus`` GPUs and the learning rate ``--auto-scale-lr`` gives."""
    per_gpu = cfg.train_dataloader.batch_size
    total = per_gpu * gpus
    optimizer = cfg.optim_wrapper.get('optimizer') or {}
    lr = optimizer.get('lr')
    checks = [Check('info', 'batch', f'{per_gpu} images per GPU x {gpus} GPUs = {total} per iteration')]
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if lr is None or base is None:
        checks.append(Check('info', 'lr', f'{lr} (no auto_scale_lr.base_batch_size: --auto-scale-lr does not apply)'))
    elif total == base:
        checks.append(Check('ok', 'lr', f'{lr:g}, written for {base} images per iteration: the same on {gpus} GPUs'))
    else:
        checks.append(Check('warn', 'lr', f'{lr:g} is written for {base} images per iteration, not {total}: '
                            f'with --auto-scale-lr it becomes {lr * total / base:g} (x {total}/{base})'))
    return checks


def check_batchnorm(model: nn.Module, cfg, per_gpu: int) -> List[Check]:
    """How many BatchNorm layers the model has, which of them train their statistics, and whether
    those are synchronised across GPUs (``sync_bn`` or SyncBN norm configs)."""
    model.train()
    norms = {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if not norms:
        return []
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in norms.values())
    training = [n for n, m in norms.items() if m.training]
    text = f'{len(norms)} BatchNorm layers ({synced} SyncBatchNorm); '
    if not training:
        return [Check('info', 'batchnorm', text + 'all keep frozen statistics (norm_eval, frozen stages): '
                      'nothing to synchronise')]
    parts = ', '.join(sorted({n.split('.')[0] for n in training}))
    alone = [n for n in training if not isinstance(norms[n], nn.SyncBatchNorm)]
    if not alone:
        how = f'synchronised across GPUs (sync_bn={cfg.get("sync_bn")!r} or SyncBN norm_cfg)'
    else:
        how = (f'{len(alone)} of them ({", ".join(sorted({n.split(".")[0] for n in alone}))}) use only their '
               f'GPU\'s {per_gpu} images: for small per-GPU batches add --cfg-options sync_bn=torch')
    return [Check('info', 'batchnorm', text + f'{len(training)} train their statistics ({parts}), {how}')]


class StepOutOfMemory(RuntimeError):
    """The training step needed more memory than the device had free."""


@contextlib.contextmanager
def cpu_memory_limit(device):
    """On a Linux CPU run, cap this process's address space at its current size plus 90% of the free
    memory, so that a step too large for this machine raises (an allocation error) instead of being
    killed by the kernel; restored afterwards. Elsewhere nothing changes."""
    if torch.device(device).type != 'cpu' or not sys.platform.startswith('linux'):
        yield
        return
    size, free = _proc_bytes('/proc/self/status', 'VmSize'), _proc_bytes('/proc/meminfo', 'MemAvailable')
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if size is None or free is None:
        yield
        return
    limit = size + int(0.9 * free)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _proc_bytes(path: str, field: str) -> Optional[int]:
    try:
        with open(path) as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(field + ':')), None)
    except OSError:
        return None


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(err)


def step_on_synthetic_batch(model, optim_wrapper, scope: str, batch: int, hw, device, steps: int) -> dict:
    """:func:`timed_training_steps` on a synthetic batch of ``batch`` images of ``hw``.

    Raises:
        StepOutOfMemory: the step did not fit in the device's free memory (on the CPU: see
            :func:`cpu_memory_limit`); whatever it allocated is released first.
    """
    try:
        with cpu_memory_limit(device):
            return timed_training_steps(model, optim_wrapper, synthetic_batch(model, scope, batch, hw), device, steps)
    except (RuntimeError, MemoryError) as err:
        if not _is_out_of_memory(err):
            raise
    optim_wrapper.zero_grad()
    release_free_memory()
    if torch.device(device).type == 'cuda':
        torch.cuda.empty_cache()
    free = _proc_bytes('/proc/meminfo', 'MemAvailable') if torch.device(device).type == 'cpu' else \
        torch.cuda.mem_get_info(device)[0]
    raise StepOutOfMemory(f'a step of {batch} x 3 x {hw[0]} x {hw[1]} needs more than the '
                          f'{(free or 0) / GIB:.1f} GiB free on {device}')


def check_step(cfg, device, shape: Optional[Tuple[int, int]], batch: Optional[int], steps: int,
               load_weights: bool) -> List[Check]:
    """Build the model and its optimizer as the Runner does and run training steps on a synthetic batch:
    trainable parameters without a gradient (a failure), BatchNorm, peak memory and time per step.

    A CPU step that does not fit in this machine's free memory is measured again with one image per
    step (said in a warning): the gradient check holds, the memory is per image. On a GPU, running
    out of memory is a failure: the job would run out too.
    """
    from mmengine.optim import build_optim_wrapper
    hw = tuple(shape) if shape else training_shape(cfg)
    batch = batch or cfg.train_dataloader.batch_size
    model, weights = build_training_model(cfg, device, load_weights)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    checks = check_batchnorm(model, cfg, cfg.train_dataloader.batch_size)
    try:
        record = step_on_synthetic_batch(model, optim_wrapper, config_scope(cfg), batch, hw, device, steps)
    except StepOutOfMemory as err:
        if torch.device(device).type != 'cpu' or batch == 1:
            return checks + [Check('FAIL', 'memory', f'{err}: lower the batch, set with_cp=True in the backbone, '
                                   'or train with --amp' + ('; or run the preflight on a machine like the '
                                                            'training nodes' if batch == 1 else ''))]
        checks.append(Check('warn', 'memory', f'{err} (in fp32 on the CPU): measured with 1 image per step'))
        batch = 1
        record = step_on_synthetic_batch(model, optim_wrapper, config_scope(cfg), batch, hw, device, steps)
    return checks + _step_findings(model, record, f'{batch} x 3 x {hw[0]} x {hw[1]} on {device}, {weights} weights',
                                   device, steps)


def _step_findings(model, record: dict, where: str, device, steps: int) -> List[Check]:
    if record['unused']:
        checks = [Check('FAIL', 'gradients', f'{len(record["unused"])} trainable parameters got no gradient '
                        f'in the step ({where}): {compact_names(record["unused"])}. Under DDP with '
                        'find_unused_parameters=False the job stops at iteration 2: make every output '
                        'used (e.g. out_indices the neck reads), freeze them, or set '
                        'find_unused_parameters=True (slower)')]
    else:
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        checks = [Check('ok', 'gradients', f'every trainable parameter ({total / 1e6:.2f} M) got a gradient '
                        f'in the step ({where}); loss {record["loss"]:.4g}')]
    what = 'CUDA allocator peak' if torch.device(device).type == 'cuda' else 'peak RSS increase'
    checks.append(Check('info', 'memory', f'{record["memory"]["increase_bytes"] / GIB:.2f} GiB ({what}) for one step'))
    timing = 'the first step (with warm-up)' if steps < 2 else f'median of {steps - 1} after the first'
    checks.append(Check('info', 'time', f'{record["seconds"]:.2f} s per iteration on this machine ({timing})'))
    return checks


def run_preflight(cfg, gpus: int = 8, tiny: bool = False, shape: Optional[Sequence[int]] = None,
                  batch: Optional[int] = None, steps: int = 2, device: Optional[str] = None) -> List[Check]:
    """Every check of ``tools/misc/preflight.py``, in order.

    Args:
        cfg (mmengine.Config): The config, command-line options merged.
        gpus: GPUs the job will use (for the batch and learning rate lines).
        tiny: the family's ``test_arch`` at :data:`TINY_SHAPE` (see :func:`tiny_config`); the config's
            own wiring is checked first, its pretrained file is not loaded.
        shape: ``(H, W)`` of the synthetic images instead of the config's training size.
        batch: images per step instead of the config's per-GPU batch.
        steps: training steps (the first is checked; later ones are timed).
        device: 'cpu', 'cuda', ...; default: CUDA when available.

    Returns:
        The findings; any with status 'FAIL' means the job would fail.
    """
    import_project()
    from mmengine.logging import MMLogger
    # a logger of its own, at WARNING: building and initialising a model logs every parameter at INFO
    MMLogger.get_instance('mmhybrid_preflight', log_level='WARNING')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    checks = check_channels(cfg)
    if any(c.status == 'FAIL' for c in checks):
        return checks   # the step would fail on the same wiring
    checks += check_files(cfg) + check_batch(cfg, gpus)
    step_cfg = cfg
    if tiny:
        step_cfg = tiny_config(cfg)
        shape = shape or TINY_SHAPE
    load = not tiny and all(c.status == 'ok' for c in checks if c.topic == 'weights')
    try:
        checks += check_step(step_cfg, device, shape, batch, steps, load_weights=load)
    except Exception as err:  # noqa: BLE001  (the finding: the step fails)
        checks.append(Check('FAIL', 'step', f'the training step failed: {type(err).__name__}: {err}'))
    return checks
