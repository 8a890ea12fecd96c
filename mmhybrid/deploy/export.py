"""Export a trained detector or segmentor to ONNX: ``tools/deployment/export_onnx.py``.

:func:`export_onnx` builds the config's model, loads the checkpoint through the safe loader
(strictly: it must be this model's), wraps it in :class:`~.detectors.DetectorGraph` or
:class:`~.segmentors.SegmentorGraph` and exports that with torch.onnx's torch.export-based
exporter (onnxscript). The file records in its metadata what a caller needs around it
(:func:`preprocessing`): mean, std, channel order, size divisor, test resize, class names and
the meaning of each output. Nothing is written unless the export succeeds (a temporary file
beside the output, renamed at the end); an existing output is replaced only with
``overwrite``, and the checkpoint never.
"""
import copy
import json
import os
import os.path as osp
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..analysis.build import build_model_from_config, config_scope
from ..analysis.preflight import training_shape
from ..checkpoints import CheckpointLoadError, load_checkpoint_file
from ..utils.config import config_dicts
from ..utils.datasets import config_classes
from .detectors import DetectorGraph, UnsupportedModelError
from .segmentors import SegmentorGraph

__all__ = ['ExportError', 'export_onnx', 'load_trained_model', 'preprocessing', 'METADATA_KEY']

#: the ONNX metadata key holding :func:`preprocessing`'s JSON
METADATA_KEY = 'mmhybrid'
#: the opset of the exported files (RoiAlign's half-pixel mode needs 16)
OPSET = 18


class ExportError(ValueError):
    """An export that cannot be done as asked (the message says what to change)."""


def load_trained_model(cfg, checkpoint: str) -> nn.Module:
    """The config's model with the weights of ``checkpoint`` (an mmengine checkpoint of this model, or
    its bare state dict), in eval mode, SyncBN turned into BatchNorm.

    Raises:
        ExportError: the file cannot be read, or holds the weights of another model.
    """
    from mmengine.model import revert_sync_batchnorm
    cfg = copy.deepcopy(cfg)
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None   # the checkpoint holds every weight
    model = revert_sync_batchnorm(build_model_from_config(cfg))
    try:
        ckpt = load_checkpoint_file(checkpoint)
    except CheckpointLoadError as err:
        raise ExportError(str(err)) from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict) or not state:
        raise ExportError(f'{checkpoint}: holds no state dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unknown = [k for k in state if k not in own]
    reshaped = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unknown or reshaped:
        raise ExportError(
            f'{checkpoint}: not a checkpoint of this config\'s {type(model).__name__} ({len(missing)} of its weights '
            f'missing, e.g. {missing[:2]}; {len(unknown)} unknown, e.g. {unknown[:2]}; {len(reshaped)} of other '
            f'shapes, e.g. {reshaped[:2]}): export with the config it was trained with')
    model.load_state_dict(state, strict=False)
    return model.eval()


def _data_preprocessor(cfg) -> dict:
    return dict(cfg.model.get('data_preprocessor') or {})


def size_divisor(cfg) -> int:
    """What test images are padded to a multiple of: mmdet's ``pad_size_divisor``, mmseg's
    ``test_cfg.size_divisor`` (1: no padding)."""
    pre = _data_preprocessor(cfg)
    return int(pre.get('pad_size_divisor') or (pre.get('test_cfg') or {}).get('size_divisor') or 1)


def test_shape(cfg) -> Tuple[int, int]:
    """The largest test image of the config's pipeline, padded to the size divisor: the default size
    of a static export."""
    probe = copy.deepcopy(cfg)
    test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    pre = probe.model.get('data_preprocessor') or {}
    pre.pop('size', None)   # mmseg's training crop
    probe.crop_size = None
    if test_loader is None:
        return training_shape(probe)
    probe.train_dataloader = copy.deepcopy(test_loader)
    probe.model.data_preprocessor = dict(pre, pad_size_divisor=size_divisor(cfg))
    return training_shape(probe)


def preprocessing(cfg, shape: Optional[Tuple[int, int]], dynamic: bool, outputs: Sequence[str]) -> Dict:
    """What an exported file expects and returns, as recorded in its metadata (``mmhybrid`` key).

    Args:
        cfg: the config.
        shape: the static input size, or None (dynamic).
        dynamic: whether batch, height and width are free.
        outputs: the output names.
    """
    pre = _data_preprocessor(cfg)
    scope = config_scope(cfg)
    resize = next((dict(scale=node.get('scale'), keep_ratio=node.get('keep_ratio', False))
                   for node in config_dicts((cfg.get('test_dataloader') or {}).get('dataset', {}))
                   if node.get('type') == 'Resize'), None)
    dataset = (cfg.get('test_dataloader') or {}).get('dataset', {})
    while isinstance(dataset.get('dataset'), dict):   # wrappers
        dataset = dataset['dataset']
    classes = config_classes(dataset, scope)
    return dict(
        task='detection' if scope == 'mmdet' else 'segmentation',
        input='images: float32 (B, 3, H, W), ' + ('RGB' if pre.get('bgr_to_rgb') else 'BGR' if pre.get('rgb_to_bgr')
                                                  else 'channels as read') + ', (x - mean) / std',
        mean=list(pre.get('mean', [0, 0, 0])), std=list(pre.get('std', [1, 1, 1])),
        bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)), size_divisor=size_divisor(cfg),
        pad_value=float(pre.get('pad_value', pre.get('pad_val', 0))), test_resize=resize,
        shape=None if dynamic else list(shape), dynamic=dynamic, outputs=list(outputs),
        classes=list(classes) if classes else None,
        coordinates='boxes in input pixels (after resize and padding); divide by the resize scale' if
        scope == 'mmdet' else 'class map and logits at the input size; crop the padding, then resize')


def graph_of(model: nn.Module, logits: bool = False) -> nn.Module:
    """The exportable graph of a built detector or segmentor (see :class:`DetectorGraph`,
    :class:`SegmentorGraph`)."""
    try:
        if hasattr(model, 'decode_head'):
            return SegmentorGraph(model, logits=logits).eval()
        if logits:
            raise ExportError('--logits is for segmentors; a detector returns dets and labels (and masks)')
        return DetectorGraph(model).eval()
    except UnsupportedModelError as err:
        raise ExportError(f'cannot export {err}') from None


def fixed_size_reason(model: nn.Module) -> Optional[str]:
    """Why the model's backbone exports for one input size only (its ``export_fixed_size``), or None."""
    return getattr(type(getattr(model, 'backbone', None)), 'export_fixed_size', None)


def check_shape(shape: Sequence[int], divisor: int) -> Tuple[int, int]:
    """``(H, W)``, refused unless both are positive multiples of the size divisor."""
    if len(shape) != 2 or min(shape) <= 0:
        raise ExportError(f'--shape takes two positive sizes H W, got {list(shape)}')
    bad = [side for side in shape if side % divisor]
    if bad:
        fixed = [-(-side // divisor) * divisor for side in shape]
        raise ExportError(f'--shape {shape[0]} {shape[1]}: the config pads test images to multiples of {divisor}, '
                          f'so the network never sees this size; use --shape {fixed[0]} {fixed[1]}')
    return tuple(shape)


def _dynamic_shapes(divisor: int):
    from torch.export import Dim
    # batch from 1; sides from one divisor step to 8192 px (any size when nothing pads)
    steps = 8192 // divisor
    height = divisor * Dim('h', min=1, max=steps) if divisor > 1 else Dim('height', min=32, max=8192)
    width = divisor * Dim('w', min=1, max=steps) if divisor > 1 else Dim('width', min=32, max=8192)
    return ({0: Dim('batch', min=1, max=256), 2: height, 3: width}, )


def _output_path(out: str, checkpoint: str, overwrite: bool) -> str:
    out = osp.abspath(out)
    if out == osp.abspath(checkpoint):
        raise ExportError(f'--out {out} is the checkpoint itself: choose another file (inputs are never overwritten)')
    if not out.endswith('.onnx'):
        raise ExportError(f'--out {out}: name an .onnx file')
    if osp.exists(out) and not overwrite:
        raise ExportError(f'{out} exists: remove it, choose another --out, or pass --force')
    if not osp.isdir(osp.dirname(out)):
        raise ExportError(f'--out {out}: the folder {osp.dirname(out)} does not exist')
    return out


def export_onnx(cfg, checkpoint: str, out: str, shape: Optional[Sequence[int]] = None, dynamic: bool = False,
                batch: int = 1, logits: bool = False, overwrite: bool = False) -> Dict:
    """Export the config's model with the checkpoint's weights to ``out`` (see the module docstring).

    Args:
        cfg (mmengine.Config): The model's config.
        checkpoint: A checkpoint of that model (``tools/train.py``'s, or a bare state dict).
        out: The ``.onnx`` file to write.
        shape: ``(H, W)`` of the input, multiples of the size divisor; default: the config's largest
            test image. With ``dynamic``, the example size (the file takes any).
        dynamic: Free batch, height and width (multiples of the size divisor), where the backbone
            allows it (:func:`fixed_size_reason`).
        batch: The batch of a static file.
        logits: Segmentors: also output the logits.
        overwrite: Replace an existing ``out``.

    Returns:
        dict: ``out``, the metadata written (:func:`preprocessing`).

    Raises:
        ExportError: in one line, for anything that cannot be exported as asked; nothing is written.
    """
    out = _output_path(out, checkpoint, overwrite)
    divisor = size_divisor(cfg)
    shape = check_shape(shape, divisor) if shape else test_shape(cfg)
    if batch < 1:
        raise ExportError(f'--batch must be at least 1, got {batch}')
    model = load_trained_model(cfg, checkpoint)
    graph = graph_of(model, logits)
    reason = fixed_size_reason(model)
    if dynamic and reason:
        raise ExportError(f'{type(model.backbone).__name__} cannot be exported with --dynamic: {reason}. Export '
                          'one file per input size (--shape H W) instead')
    example = torch.randn(max(batch, 2) if dynamic else batch, 3, *shape)
    metadata = preprocessing(cfg, None if dynamic else shape, dynamic, graph.output_names)
    with torch.no_grad():
        program = torch.onnx.export(graph, (example, ), dynamo=True, input_names=['images'],
                                    output_names=graph.output_names, opset_version=OPSET, verbose=False,
                                    dynamic_shapes=_dynamic_shapes(divisor) if dynamic else None)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    handle, tmp = tempfile.mkstemp(suffix='.onnx.part', dir=osp.dirname(out))
    os.close(handle)
    try:
        program.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # as an ordinary new file (mkstemp makes it private)
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dict(out=out, metadata=metadata)
