"""The installed stack is the one the README promises (what `make` installs)."""
import importlib

import torch


def test_torch_is_the_registry_build_with_a_working_torchvision():
    import torchvision
    assert torch.__version__.startswith('2.13.0') and '+cpu' not in torch.__version__
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_timm_imports_and_builds_a_feature_model():
    import timm
    model = timm.create_model('resnet18', pretrained=False, features_only=True, out_indices=(1, 2))
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()


def test_mmcv_has_its_compiled_ops():
    from mmcv.ops import RoIAlign, nms
    importlib.import_module('mmcv._ext')
    dets, keep = nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]]), torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]
    rois = torch.tensor([[0., 0., 0., 8., 8.]])
    assert RoIAlign((2, 2), 1.0, 0)(torch.randn(1, 4, 16, 16), rois).shape == (1, 4, 2, 2)


def test_pinned_openmmlab_versions_and_pkg_resources():
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import pkg_resources  # noqa: F401  (setuptools < 82: mmengine's mmdet::/mmseg:: bases need it)
    assert (mmengine.__version__, mmcv.__version__, mmdet.__version__, mmseg.__version__) == \
        ('0.10.7', '2.1.0', '3.3.0', '1.2.2')
