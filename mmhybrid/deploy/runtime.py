"""Exported files run by ONNX Runtime, as mmengine models: ``tools/test.py CONFIG FILE.onnx``.

:class:`OnnxSession` runs a file of ``tools/deployment/export_onnx.py`` (CUDA when ONNX Runtime
has it and it is asked for, else the CPU). :class:`ONNXRuntimeDetector` and
:class:`ONNXRuntimeSegmentor` put it where a detector or segmentor sits in the config: the
config's own data preprocessor feeds it, and the outputs become the predictions mmdet's and
mmseg's metrics read, post-processed as mmdet and mmseg do (boxes rescaled to the original
image, masks pasted with mmdet's ``_do_paste_mask``; logits cropped and resized as mmseg's
``postprocess_result``), so a ``.pth`` and its ``.onnx`` give comparable numbers.
"""
import json
from types import SimpleNamespace
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import InstanceData, PixelData

from ..registry import MODELS

__all__ = ['ONNXRuntimeDetector', 'ONNXRuntimeSegmentor', 'OnnxSession']


class OnnxSession:
    """An exported file and its metadata, run on ``(B, 3, H, W)`` tensors.

    A file of one input size takes smaller images padded (bottom and right, with the config's pad
    value) up to it; its outputs of image size are cropped back.

    Args:
        path: the ``.onnx`` file.
        device: 'cpu', or 'cuda' (ONNX Runtime's CUDA provider when installed, else the CPU).
    """

    def __init__(self, path: str, device: str = 'cpu'):
        import onnxruntime as ort
        from .export import METADATA_KEY
        providers = ['CPUExecutionProvider']
        if device.startswith('cuda') and 'CUDAExecutionProvider' in ort.get_available_providers():
            providers.insert(0, 'CUDAExecutionProvider')
        self.session = ort.InferenceSession(path, providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(f'{path}: not a file of tools/deployment/export_onnx.py (no {METADATA_KEY!r} metadata)')
        self.metadata = json.loads(meta[METADATA_KEY])
        self.path = path

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Run the file on ``images``; returns its outputs by name (image-size outputs cropped back)."""
        h, w = images.shape[-2:]
        shape = self.metadata.get('shape')
        if shape is not None:
            if h > shape[0] or w > shape[1]:
                raise ValueError(f'{self.path} takes images of at most {shape[0]} x {shape[1]}; these are {h} x {w}: '
                                 'export with --shape covering them, or --dynamic')
            images = F.pad(images, (0, shape[1] - w, 0, shape[0] - h), value=self.metadata.get('pad_value', 0.0))
        outputs = self._run(images.detach().cpu().float())
        for name in ('seg', 'logits'):
            if name in outputs:
                outputs[name] = outputs[name][..., :h, :w]
        return outputs

    def _run(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Run the session; a file of a fixed batch takes the images in chunks of that batch (the last
        one filled up with blank images, whose outputs are dropped)."""
        names = [o.name for o in self.session.get_outputs()]
        fixed = self.session.get_inputs()[0].shape[0]
        step = fixed if isinstance(fixed, int) else len(images)
        chunks = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            filled = torch.cat([chunk, chunk.new_zeros(step - len(chunk), *chunk.shape[1:])]) if len(chunk) < step \
                else chunk
            values = self.session.run(names, {'images': filled.contiguous().numpy()})
            chunks.append([torch.from_numpy(np.ascontiguousarray(v))[:len(chunk)] for v in values])
        return {name: torch.cat([c[k] for c in chunks]) for k, name in enumerate(names)}


@MODELS.register_module()
class ONNXRuntimeDetector(BaseModel):
    """An exported detector in place of the config's model (predictions only).

    Args:
        onnx_file (str): The exported file.
        data_preprocessor (dict): The config's ``model.data_preprocessor``.
        mask_thr_binary (float): Mask probability threshold (the config's ``test_cfg.rcnn``).
        device (str): 'cpu' or 'cuda'.
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None, mask_thr_binary: float = 0.5,
                 device: str = 'cpu'):
        super().__init__(data_preprocessor=data_preprocessor)
        self.session = OnnxSession(onnx_file, device)
        self.mask_thr_binary = mask_thr_binary

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f'{type(self).__name__} only predicts (mode={mode!r})')
        outputs = self.session(inputs)
        for i, sample in enumerate(data_samples):
            sample.pred_instances = self.instances(outputs, i, sample.metainfo)
        return data_samples

    def instances(self, outputs: Dict[str, torch.Tensor], i: int, meta: dict) -> InstanceData:
        """Image ``i``'s detections as mmdet's ``predict(rescale=True)`` gives them."""
        labels = outputs['labels'][i]
        keep = labels >= 0
        dets = outputs['dets'][i][keep]
        bboxes = dets[:, :4].clone()
        img_h, img_w = meta['img_shape'][:2]
        bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, img_w)
        bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, img_h)
        bboxes /= bboxes.new_tensor(meta['scale_factor']).repeat(2)
        result = InstanceData(bboxes=bboxes, scores=dets[:, 4], labels=labels[keep])
        if 'masks' in outputs:
            result.masks = self.paste(outputs['masks'][i][keep], bboxes, meta['ori_shape'][:2])
        return result

    def paste(self, probs: torch.Tensor, bboxes: torch.Tensor, ori_shape) -> torch.Tensor:
        """Each box's ``M x M`` mask probabilities pasted into the original image and thresholded, one box
        at a time with mmdet's ``_do_paste_mask`` (as its mask head does on the CPU)."""
        from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
        img_h, img_w = ori_shape
        masks = torch.zeros(len(probs), img_h, img_w, dtype=torch.bool)
        for k in range(len(probs)):
            chunk, where = _do_paste_mask(probs[k:k + 1, None], bboxes[k:k + 1], img_h, img_w, skip_empty=True)
            masks[(slice(k, k + 1), ) + where] = chunk >= self.mask_thr_binary
        return masks


@MODELS.register_module()
class ONNXRuntimeSegmentor(BaseModel):
    """An exported segmentor in place of the config's model (predictions only).

    With a ``logits`` output the prediction is mmseg's ``postprocess_result`` of them (padding cropped,
    bilinear resize to the original image, argmax); with the class map only, the map is cropped and
    resized (nearest) to the original image.

    Args:
        onnx_file (str): The exported file.
        data_preprocessor (dict): The config's ``model.data_preprocessor``.
        align_corners (bool): The decode head's ``align_corners``.
        threshold (float): The decode head's ``threshold`` (one-channel heads).
        device (str): 'cpu' or 'cuda'.
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None, align_corners: bool = False,
                 threshold: float = 0.3, device: str = 'cpu'):
        super().__init__(data_preprocessor=data_preprocessor)
        self.session = OnnxSession(onnx_file, device)
        self.align_corners = align_corners
        self.decode_head = SimpleNamespace(threshold=threshold)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f'{type(self).__name__} only predicts (mode={mode!r})')
        outputs = self.session(inputs)
        if 'logits' in outputs:
            from mmseg.models.segmentors.base import BaseSegmentor
            return BaseSegmentor.postprocess_result(self, outputs['logits'], data_samples)
        return self.class_maps(outputs['seg'], data_samples)

    @staticmethod
    def class_maps(seg: torch.Tensor, data_samples: List) -> List:
        """Class maps cropped of their padding and resized (nearest) to each original image."""
        height, width = seg.shape[-2:]
        for i, sample in enumerate(data_samples):
            left, right, top, bottom = sample.metainfo.get('padding_size', [0] * 4)
            crop = seg[i:i + 1, None, top:height - bottom, left:width - right].float()
            pred = F.interpolate(crop, size=tuple(sample.metainfo['ori_shape'][:2]), mode='nearest')
            sample.set_data(dict(pred_sem_seg=PixelData(data=pred[0].long())))
        return data_samples
