"""mmdet components that run mmcv's compiled ops in float32 under autocast.

mmcv's compiled ops are autograd Functions around C++/CUDA kernels, so autocast
does not cast their inputs, and several have no bfloat16 kernel. Under CPU
bf16 autocast (``tools/train.py --amp`` on a CPU) a training step fails in:

* ``mmcv.ops.nms`` (RPN proposals, via ``batched_nms``):
  ``RuntimeError: expected scalar type Float but found BFloat16``;
* ``mmcv.ops.RoIAlign`` (``SingleRoIExtractor``, Mask R-CNN and Cascade
  Mask R-CNN): ``NotImplementedError: "ROIAlign_forward" not implemented for
  'BFloat16'`` (bf16 features), or the scalar type error above (bf16 RoIs);
* ``mmcv.ops.sigmoid_focal_loss`` (RetinaNet's ``FocalLoss`` on a GPU; on the
  CPU mmdet uses its PyTorch version) has half but no bfloat16 kernel.

The classes here are mmdet's own with the op's inputs cast to float32 and
autocast switched off around it (outputs go back to the input dtype where a
network layer reads them next); ``tools/train.py --amp`` swaps them into any
config with :func:`use_fp32_ops`. Outside autocast, with float32 inputs, they
compute exactly what mmdet's classes compute.

They are registered in mmhybrid's model registry, which imports this module when
a config first builds a ``mmhybrid.`` type; mmdet is imported here only, so
``import mmhybrid`` stays free of mmdet.
"""
from contextlib import contextmanager

import torch

from ..registry import MODELS
from ..utils.config import config_dicts

try:
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.losses import FocalLoss
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
except ImportError:  # mmseg-only installs: nothing to register
    RPNHead = FocalLoss = SingleRoIExtractor = None


@contextmanager
def autocast_off(device_type):
    """Switch autocast off for ``device_type`` ('cpu', 'cuda', ...)."""
    try:
        ctx = torch.autocast(device_type, enabled=False)
    except RuntimeError:  # a device type torch's autocast does not know
        yield
        return
    with ctx:
        yield


def to_fp32(value):
    """``value`` with every low-precision floating tensor (also inside lists and
    tuples) cast to float32; everything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.dtype != torch.float32:
            return value.float()
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(v) for v in value)
    return value


def _device_type(tensors):
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device.type
        if isinstance(t, (list, tuple)) and t:
            return _device_type(t)
    return 'cpu'


if RPNHead is not None:

    @MODELS.register_module()
    class FP32ProposalRPNHead(RPNHead):
        """mmdet's ``RPNHead`` that decodes its proposals and runs their NMS
        (``mmcv.ops.nms``, float32 only) in float32, also under autocast.

        Decoding in float32 also keeps the proposals' coordinates exact: bf16
        has 8 bits of mantissa, several pixels at detection image sizes.
        """

        def predict_by_feat(self, *args, **kwargs):
            with autocast_off(_device_type(args)):
                return super().predict_by_feat(*to_fp32(args), **kwargs)

    @MODELS.register_module()
    class FP32SingleRoIExtractor(SingleRoIExtractor):
        """mmdet's ``SingleRoIExtractor`` running ``mmcv.ops.RoIAlign`` (no bf16
        kernel) on float32 features and RoIs; the RoI features come back in
        the features' dtype."""

        def forward(self, feats, rois, roi_scale_factor=None):
            dtype = feats[0].dtype
            with autocast_off(feats[0].device.type):
                roi_feats = super().forward(to_fp32(tuple(feats)), to_fp32(rois), roi_scale_factor)
            return roi_feats.to(dtype)

    @MODELS.register_module()
    class FP32FocalLoss(FocalLoss):
        """mmdet's ``FocalLoss`` computed in float32 (on a GPU it calls
        ``mmcv.ops.sigmoid_focal_loss``, which has no bf16 kernel)."""

        def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
            with autocast_off(pred.device.type):
                return super().forward(to_fp32(pred), target, to_fp32(weight),
                                       avg_factor=avg_factor, reduction_override=reduction_override)


#: mmdet's types whose mmcv op has no bfloat16 kernel -> mmhybrid's float32 version
FP32_VERSIONS = {'RPNHead': 'mmhybrid.FP32ProposalRPNHead',
                 'SingleRoIExtractor': 'mmhybrid.FP32SingleRoIExtractor',
                 'FocalLoss': 'mmhybrid.FP32FocalLoss'}


def use_fp32_ops(cfg) -> list:
    """Swap, in place, every mmdet ``RPNHead``, ``SingleRoIExtractor`` and ``FocalLoss`` of a model
    config for mmhybrid's version that runs its mmcv op in float32 under autocast (what
    ``tools/train.py --amp`` does to any config, yours included).

    Args:
        cfg (dict): A model config (``cfg.model``), or any part of one.

    Returns:
        list: The types that were swapped, in the order met.
    """
    swapped = []
    for node in config_dicts(cfg):
        name = node.get('type')
        if isinstance(name, str) and name.split('.')[-1] in FP32_VERSIONS and not name.startswith('mmhybrid.'):
            if name.partition('.')[0] in (name, 'mmdet'):   # 'RPNHead' or 'mmdet.RPNHead'
                node['type'] = FP32_VERSIONS[name.split('.')[-1]]
                swapped.append(name)
    return swapped
