"""mmdet detectors as one exportable graph: backbone, neck, heads, box decoding and NMS.

:class:`DetectorGraph` wraps a built mmdet detector (RetinaNet, Faster/Mask R-CNN, Cascade
(Mask) R-CNN) and computes what its ``predict`` computes, with the same modules and weights,
in tensor operations that ``torch.export`` records for any batch size:

- every image keeps a fixed number of candidates (top-k instead of thresholded filtering),
  and results are padded to ``max_per_img`` (score 0, label -1);
- multi-class NMS is one ``torchvision.ops.nms`` call (ONNX ``NonMaxSuppression``) over all
  images and classes, separated by coordinate offsets as mmcv's ``batched_nms`` does;
- mmcv's RoIAlign is ``torchvision.ops.roi_align`` (ONNX ``RoiAlign``, half-pixel), computed
  on every level and selected by mmdet's level rule.

Boxes are in the coordinates of the network input (after resize and padding) and clipped to
it; masks are the mask head's ``M x M`` probabilities of each box's class, which the caller
pastes into the image (mmdet's ``_do_paste_mask``), as mmdeploy's outputs.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torchvision

__all__ = ['DetectorGraph', 'UnsupportedModelError', 'dense_nms']

#: (RoI, class) candidates per image that enter the final NMS of an R-CNN head (mmdeploy's
#: ``pre_top_k``); mmdet lets every candidate above ``score_thr`` in, the same unless more than this
PRE_NMS_TOP_K = 5000
#: score of a candidate that must not survive (real scores are probabilities, >= 0)
INVALID = -1.0


class UnsupportedModelError(ValueError):
    """A model (or head) that the exporter does not cover."""


def dense_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
              max_per_img: int, score_threshold: float = 0.0,
              pre_top_k: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """NMS within each (image, group) of a batch, with fixed-size results.

    Args:
        boxes: ``(B, M, 4)`` x1, y1, x2, y2.
        scores: ``(B, M)``; candidates at or below ``score_threshold`` (e.g. :data:`INVALID`) never
            come out (as mmdet leaves them out before NMS: a box can only suppress lower scores).
        groups: ``(B, M)`` integer group (class or level) of each box; groups never suppress each other.
        iou_threshold: boxes of a group overlapping a kept one by more than this are dropped.
        max_per_img: results per image.
        score_threshold: the lowest score that stays out.
        pre_top_k: keep only this many highest-scoring candidates per image before NMS.

    Returns:
        ``dets (B, max_per_img, 5)`` (box, score) by descending score and ``groups (B, max_per_img)``;
        places without a result hold zeros and group -1.
    """
    if pre_top_k is not None and scores.shape[1] > pre_top_k:
        scores, index = scores.topk(pre_top_k, dim=1)
        boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        groups = groups.gather(1, index)
    batch, num = scores.shape
    image = torch.arange(batch, device=boxes.device)[:, None]
    # one offset per (image, group), larger than any coordinate: mmcv's batched_nms over the batch
    key = (image * (groups.max() + 1) + groups).to(boxes.dtype)
    shifted = boxes + (key * (boxes.max() + 1))[..., None]
    keep = torchvision.ops.nms(shifted.reshape(-1, 4), scores.reshape(-1), iou_threshold)
    kept = torch.zeros(batch * num, dtype=torch.bool, device=boxes.device).index_fill(0, keep, True)
    ranked = torch.where(kept.reshape(batch, num) & (scores > score_threshold), scores,
                         torch.full_like(scores, INVALID))
    k = min(max_per_img, num)
    top, index = ranked.topk(k, dim=1)
    valid = top > INVALID
    dets = torch.cat([boxes.gather(1, index[..., None].expand(-1, -1, 4)), top[..., None]], dim=-1)
    dets = torch.where(valid[..., None], dets, torch.zeros_like(dets))
    labels = torch.where(valid, groups.gather(1, index), torch.full_like(index, -1))
    if k < max_per_img:
        dets = torch.cat([dets, dets.new_zeros(batch, max_per_img - k, 5)], dim=1)
        labels = torch.cat([labels, labels.new_full((batch, max_per_img - k), -1)], dim=1)
    return dets, labels


def decode(coder, priors: torch.Tensor, deltas: torch.Tensor, hw) -> torch.Tensor:
    """``coder.decode`` of ``(..., 4)`` priors and deltas of the same shape, clipped to ``hw``."""
    shape = deltas.shape
    return coder.decode(priors.reshape(-1, 4), deltas.reshape(-1, 4), max_shape=hw).reshape(shape)


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, k]]`` for ``values (B, N, D)`` and ``index (B, K)``."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def level_candidates(head, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor], hw,
                     nms_pre: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``nms_pre`` best (anchor, class) pairs of every level of a dense head, decoded.

    Returns:
        ``boxes (B, M, 4)``, ``scores (B, M)``, ``labels (B, M)`` and ``levels (B, M)``.
    """
    priors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], dtype=cls_scores[0].dtype,
                                              device=cls_scores[0].device)
    out = [], [], [], []
    for level, (cls_score, bbox_pred, prior) in enumerate(zip(cls_scores, bbox_preds, priors)):
        batch, channels = cls_score.shape[:2]
        scores = cls_score.permute(0, 2, 3, 1).reshape(batch, -1, head.cls_out_channels)
        scores = scores.sigmoid() if head.use_sigmoid_cls else scores.softmax(-1)[..., :-1]
        classes = scores.shape[-1]
        flat = scores.reshape(batch, -1)
        top, index = flat.topk(min(nms_pre, flat.shape[1]) if nms_pre > 0 else flat.shape[1], dim=1)
        anchor = index // classes
        deltas = _gather(bbox_pred.permute(0, 2, 3, 1).reshape(batch, -1, 4), anchor)
        boxes = decode(head.bbox_coder, prior[anchor], deltas, hw)
        for store, value in zip(out, (boxes, top, index % classes, torch.full_like(index, level))):
            store.append(value)
    return tuple(torch.cat(values, dim=1) for values in out)


def roi_features(extractor, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
    """mmdet's ``SingleRoIExtractor`` with torchvision's RoIAlign: each RoI from the level its scale
    maps to (``floor(log2(sqrt(area) / finest_scale))``), computed on every level and selected.

    Args:
        extractor: the detector's RoI extractor (its RoIAlign layers give sizes and sampling).
        feats: the neck's maps.
        rois: ``(K, 5)`` batch index, x1, y1, x2, y2.
    """
    layers = extractor.roi_layers
    num_levels = len(layers)
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    target = torch.floor(torch.log2(scale / extractor.finest_scale + 1e-6)).clamp(0, num_levels - 1)
    out = None
    for level, (layer, feat) in enumerate(zip(layers, feats[:num_levels])):
        pooled = torchvision.ops.roi_align(feat, rois, layer.output_size, layer.spatial_scale,
                                           int(layer.sampling_ratio), bool(layer.aligned))
        chosen = (target == level)[:, None, None, None]
        out = torch.where(chosen, pooled, torch.zeros_like(pooled) if out is None else out)
    return out


def _as_rois(boxes: torch.Tensor) -> torch.Tensor:
    """``(B, K, 4)`` boxes -> ``(B * K, 5)`` RoIs with their batch index first."""
    batch, k = boxes.shape[:2]
    index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)[:, None, None].expand(batch, k, 1)
    return torch.cat([index, boxes], dim=-1).reshape(-1, 5)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise UnsupportedModelError(what)


def _drop_small(boxes: torch.Tensor, scores: torch.Tensor, cfg) -> torch.Tensor:
    """mmdet's ``min_bbox_size`` rule of dense heads: boxes not wider and taller than it are dropped."""
    min_size = cfg.get('min_bbox_size', -1)
    if min_size < 0:
        return scores
    wide = ((boxes[..., 2] - boxes[..., 0]) > min_size) & ((boxes[..., 3] - boxes[..., 1]) > min_size)
    return torch.where(wide, scores, torch.full_like(scores, INVALID))


class DetectorGraph(nn.Module):
    """A built mmdet detector's inference as one graph of tensor operations (see the module docstring).

    Args:
        detector: a ``SingleStageDetector`` with an anchor-based dense head (RetinaNet), or a
            ``TwoStageDetector`` with an RPN and a ``StandardRoIHead`` or ``CascadeRoIHead``
            (box heads with class-wise regression; an ``FCNMaskHead`` when there are masks).

    Raises:
        UnsupportedModelError: for any other detector or head, naming it.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        _check(hasattr(detector, 'extract_feat') and hasattr(detector, 'data_preprocessor'),
               f'{type(detector).__name__}: not an mmdet detector or mmseg segmentor')
        self.detector = detector
        self.two_stage = hasattr(detector, 'rpn_head')
        self.cascade = self.two_stage and hasattr(detector.roi_head, 'num_stages')
        self.with_mask = bool(getattr(detector, 'with_mask', False))
        head = detector.rpn_head if self.two_stage else getattr(detector, 'bbox_head', None)
        _check(head is not None and hasattr(head, 'prior_generator') and hasattr(head, 'bbox_coder'),
               f'{type(detector).__name__}: only anchor-based dense heads (RetinaNet, RPN) are exported')
        if self.two_stage:
            roi_head = detector.roi_head
            heads = roi_head.bbox_head if self.cascade else [roi_head.bbox_head]
            _check(all(not h.reg_class_agnostic and not h.custom_cls_channels for h in heads),
                   f'{type(roi_head).__name__}: only box heads with class-wise regression and softmax '
                   'scores are exported')

    @property
    def output_names(self) -> List[str]:
        return ['dets', 'labels'] + (['masks'] if self.with_mask else [])

    def forward(self, images: torch.Tensor):
        """``images (B, 3, H, W)``, normalized and padded -> ``dets (B, N, 5)``, ``labels (B, N)``
        and, with a mask head, ``masks (B, N, M, M)``."""
        hw = images.shape[-2:]
        feats = self.detector.extract_feat(images)
        if not self.two_stage:
            return self._dense(feats, hw)
        proposals, valid = self._proposals(feats, hw)
        dets, labels = self._rcnn(feats, proposals, valid, hw)
        if not self.with_mask:
            return dets, labels
        return dets, labels, self._masks(feats, dets, labels)

    def _dense(self, feats, hw):
        head, cfg = self.detector.bbox_head, self.detector.bbox_head.test_cfg
        boxes, scores, labels, _ = level_candidates(head, *head(feats), hw, cfg.get('nms_pre', -1))
        scores = _drop_small(boxes, scores, cfg)
        return dense_nms(boxes, scores, labels, cfg.nms.iou_threshold, cfg.max_per_img, cfg.get('score_thr', 0.0))

    def _proposals(self, feats, hw):
        head, cfg = self.detector.rpn_head, self.detector.test_cfg.rpn
        boxes, scores, _, levels = level_candidates(head, *head(feats), hw, cfg.get('nms_pre', -1))
        scores = _drop_small(boxes, scores, cfg)
        dets, kept = dense_nms(boxes, scores, levels, cfg.nms.iou_threshold, cfg.max_per_img, score_threshold=INVALID)
        return dets[..., :4], kept >= 0

    def _rcnn(self, feats, proposals, valid, hw):
        roi_head, cfg = self.detector.roi_head, self.detector.test_cfg.rcnn
        batch, num = proposals.shape[:2]
        rois = _as_rois(proposals)
        heads = roi_head.bbox_head if self.cascade else [roi_head.bbox_head]
        logits = []
        for stage, bbox_head in enumerate(heads):
            extractor = roi_head.bbox_roi_extractor[stage] if self.cascade else roi_head.bbox_roi_extractor
            cls_score, bbox_pred = bbox_head(roi_features(extractor, feats, rois))
            logits.append(cls_score)
            if stage < len(heads) - 1:   # cascade: refine the RoIs with the predicted class's deltas
                label = cls_score[:, :-1].argmax(dim=1)
                rois = torch.cat([rois[:, :1], bbox_head.regress_by_class(
                    rois[:, 1:], label, bbox_pred, dict(img_shape=hw))], dim=1)
        scores = (sum(logits) / len(logits)).softmax(-1)[:, :-1]   # cascade: the stages' mean logits
        classes = scores.shape[-1]
        boxes = decode(heads[-1].bbox_coder, rois[:, None, 1:].expand(-1, classes, 4),
                       bbox_pred.reshape(-1, classes, 4), hw)
        scores = torch.where(valid.reshape(-1, 1), scores, torch.full_like(scores, INVALID))
        labels = torch.arange(classes, device=scores.device).expand(batch, num, classes).reshape(batch, -1)
        dets, labels = dense_nms(boxes.reshape(batch, -1, 4), scores.reshape(batch, -1), labels,
                                 cfg.nms.iou_threshold, cfg.max_per_img, cfg.score_thr, pre_top_k=PRE_NMS_TOP_K)
        return dets, labels

    def _masks(self, feats, dets, labels):
        roi_head = self.detector.roi_head
        batch, num = labels.shape
        rois = _as_rois(dets[..., :4])
        mask_heads = roi_head.mask_head if self.cascade else [roi_head.mask_head]
        extractors = roi_head.mask_roi_extractor if self.cascade else [roi_head.mask_roi_extractor]
        probs = None
        for mask_head, extractor in zip(mask_heads, extractors):
            stage = mask_head(roi_features(extractor, feats, rois)).sigmoid()
            probs = stage if probs is None else probs + stage
        probs = probs / len(mask_heads)   # cascade: the mean of the stages' probabilities
        size = probs.shape[-1]
        label = labels.clamp(min=0) if probs.shape[1] > 1 else torch.zeros_like(labels)   # class-agnostic: one map
        index = label.reshape(-1, 1, 1, 1).expand(-1, 1, size, size)
        return probs.gather(1, index).reshape(batch, num, size, size)
