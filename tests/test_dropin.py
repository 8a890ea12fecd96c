"""The drop-in story of docs/dropin.md, run as written.

A user inherits mmdet's / mmseg's own shipped config (Swin or ResNet), replaces
the backbone with ``_delete_=True, type='mmhybrid.<Family>'`` and sets the
neck / decode head widths. The snippets and channel tables are read from
docs/dropin.md itself, so the documentation cannot drift from what works; every
family is trained one step inside eight of the shipped ResNet configs.
"""
import ast
import logging
import math
import re
import socket
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from family_archs import SMALL_ARCH
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmhybrid.models
from mmhybrid.models import CrossFormer
from mmhybrid.models.base import HybridBackbone
from mmhybrid.registry import MODELS as HYBRID_MODELS
from test_configs import fewer_proposals

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'dropin.md'
SEG_HW = (100, 132)  # not multiples of 32


def snippet(base_prefix):
    """The one ```python block of docs/dropin.md whose _base_ starts so."""
    blocks = re.findall(r'```python\n(.*?)```', DOC.read_text(), re.S)
    found = [b for b in blocks if f"_base_ = '{base_prefix}" in b]
    assert len(found) == 1, f'expected one {base_prefix} snippet in {DOC}'
    return found[0]


def load(text, tmp_path, name):
    path = tmp_path / name
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    # the snippet names the official checkpoint; tests use random weights
    cfg.model.backbone.init_cfg = None
    return cfg


def build(cfg):
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


def check_backbone(cfg, model):
    """The Swin backbone is gone, the built backbone is our CrossFormer."""
    assert cfg.model.backbone.type == 'mmhybrid.CrossFormer'
    assert set(cfg.model.backbone) <= {'type', 'arch', 'init_cfg'}, (
        'Swin arguments leaked into the backbone dict')
    assert isinstance(model.backbone, CrossFormer)
    assert model.backbone.arch_name == 'small'


def finite_total(model, losses):
    total, _ = model.parse_losses(losses)  # how the runner sums them
    return math.isfinite(float(total.detach()))


def test_mmdet_swin_mask_rcnn_dropin(tmp_path):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    cfg = load(snippet('mmdet::'), tmp_path, 'dropin_det.py')
    model = build(cfg)
    check_backbone(cfg, model)
    # everything else is still the user's Swin config
    assert cfg.model.type == 'MaskRCNN'
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert list(cfg.model.neck.in_channels) == model.backbone.out_channels

    model.train()
    batch = demo_mm_inputs(1, image_shapes=[(3, 120, 150)], num_items=[3],
                           with_mask=True)
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(losses)
    assert finite_total(model, losses)


def test_mmseg_swin_upernet_dropin(tmp_path):
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    cfg = load(snippet('mmseg::swin/'), tmp_path, 'dropin_seg.py')
    # the Swin config pads every crop to 512x512; small crops keep this fast
    cfg.model.data_preprocessor.size = SEG_HW
    model = build(cfg)
    check_backbone(cfg, model)
    assert cfg.model.type == 'EncoderDecoder'
    assert cfg.model.pretrained is None
    assert list(cfg.model.decode_head.in_channels) == (
        model.backbone.out_channels)
    assert cfg.model.auxiliary_head.in_channels == (
        model.backbone.out_channels[cfg.model.auxiliary_head.in_index])

    model.train()
    h, w = SEG_HW
    inputs, samples = [], []
    for _ in range(2):  # UPerHead's 1x1 pooling branch has BatchNorm
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, h, w), dtype=torch.long))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert finite_total(model, losses)


def test_without_delete_the_swin_arguments_leak(tmp_path):
    """Why the docs insist on _delete_=True: without it mmengine merges the
    dict into Swin's, and CrossFormer refuses Swin's arguments by name."""
    text = re.sub(r'_delete_=True,[^\n]*\n\s*', '', snippet('mmdet::'))
    assert '_delete_' not in text
    cfg = load(text, tmp_path, 'dropin_det_no_delete.py')
    assert 'embed_dims' in cfg.model.backbone
    with pytest.raises(TypeError, match='embed_dims'):
        build(cfg)


def test_channel_table_matches_backbone():
    """The docs' per-size widths are what each built backbone returns."""
    rows = re.findall(r'^\| `(\w+)` \(`\w`\) \| `(\[[\d, ]+\])` \| (\d+) \|',
                      DOC.read_text(), re.M)
    assert [r[0] for r in rows] == ['tiny', 'small', 'base', 'large']
    for arch, channels, aux in rows:
        backbone = CrossFormer(arch=arch)
        assert ast.literal_eval(channels) == backbone.out_channels, arch
        assert int(aux) == backbone.out_channels[2], arch


# -- mmdet's / mmseg's ResNet configs, every family -------------------------------

RESNET_HOSTS = {  # id -> (shipped config, detector / segmentor type)
    'retinanet': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'RetinaNet'),
    'mask_rcnn': ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'MaskRCNN'),
    'fcos': ('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', 'FCOS'),
    'atss': ('mmdet::atss/atss_r50_fpn_1x_coco.py', 'ATSS'),
    'cascade_rcnn': ('mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py', 'CascadeRCNN'),
    'upernet': ('mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py', 'EncoderDecoder'),
    'sem_fpn': ('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', 'EncoderDecoder'),
    'deeplabv3plus': ('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py',
                      'EncoderDecoder'),
}
#: what a family needs in the backbone dict for four maps at strides 4, 8, 16, 32
FOUR_LEVELS = {'CvT': dict(extra_stage=True)}
ODD_HW = (129, 193)  # H x W, neither a multiple of 32 (nor of 8)


def widths_text(host, ch):
    """The head / neck part of the user's model dict for backbone widths ``ch``."""
    if host == 'upernet':
        return f'decode_head=dict(in_channels={ch}), auxiliary_head=dict(in_channels={ch[2]})'
    if host == 'deeplabv3plus':
        return (f'decode_head=dict(in_channels={ch[3]}, c1_in_channels={ch[0]}), '
                f'auxiliary_head=dict(in_channels={ch[2]})')
    return f'neck=dict(in_channels={ch})'  # mmdet's FPNs, mmseg's Semantic FPN


def user_config(base, backbone, widths):
    """A drop-in config file's text, as a user writes it."""
    return (f"_base_ = '{base}'\n\n"
            "custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)\n\n"
            f'model = dict(\n    backbone=dict({backbone}),\n    {widths})\n')


def backbone_text(family, **kwargs):
    args = [f"_delete_=True, type='mmhybrid.{family}'"]
    args += [f'{k}={v!r}' for k, v in kwargs.items()]
    return ', '.join(args)


@contextmanager
def mmengine_log():
    """The records mmengine's current logger (print_log(logger='current')) gets."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def pretrained_warnings(records):
    return [r for r in records
            if r.levelno == logging.WARNING and 'model.pretrained' in r.getMessage()]


@pytest.fixture
def offline(monkeypatch):
    """No network, and no checkpoint read by a backbone."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'network / checkpoint access: {args[:2]}')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(HybridBackbone, 'load_pretrained', refuse)


def seg_batch(hw, n=2):
    """``n`` random images with random ADE20K labels (n=2: pooled 1x1 BN branches)."""
    from mmseg.structures import SegDataSample
    h, w = hw
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w), dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


#: hosts whose step alone takes seconds on 2 CPU cores (UperNet's 512-wide stride-4
#: bottleneck, Cascade R-CNN's three RoI stages): left out of `make test-fast`
SLOW_HOSTS = {'upernet', 'cascade_rcnn'}


@pytest.mark.parametrize('family', list(SMALL_ARCH))
@pytest.mark.parametrize('host', [
    pytest.param(h, marks=pytest.mark.slow) if h in SLOW_HOSTS else h for h in RESNET_HOSTS])
def test_resnet_config_dropin_trains(host, family, tmp_path, offline):
    """Each family inside each shipped ResNet config, written as the docs say:
    built in the host scope, initialised offline, one training step at an odd
    size with a finite loss and a gradient for every trainable backbone weight."""
    base, model_type = RESNET_HOSTS[host]
    kwargs = dict(arch=SMALL_ARCH[family], **FOUR_LEVELS.get(family, {}))
    widths = HYBRID_MODELS.build(dict(type=f'mmhybrid.{family}', **kwargs)).out_channels
    assert len(widths) == 4
    path = tmp_path / f'{host}_{family}.py'
    path.write_text(user_config(base, backbone_text(family, **kwargs), widths_text(host, widths)))
    cfg = Config.fromfile(str(path))
    fewer_proposals(cfg)   # the host's heads at a fraction of the RoIs (test_configs.py)
    seg = cfg.default_scope == 'mmseg'
    assert cfg.model.type == model_type
    assert set(cfg.model.backbone) == {'type', *kwargs}, 'ResNet arguments leaked'
    if seg:
        # inherited as written; the backbone ignores it
        assert cfg.model.pretrained == 'open-mmlab://resnet50_v1c'
        cfg.model.data_preprocessor.size = ODD_HW  # the ADE configs pad to 512x512

    with mmengine_log() as records:
        model = build(cfg)
    assert len(pretrained_warnings(records)) == (1 if seg else 0)
    assert type(model.backbone) is getattr(mmhybrid.models, family)
    assert model.backbone.out_channels == widths
    assert model.backbone.init_cfg is None  # neither ResNet's checkpoint nor model.pretrained
    model.init_weights()

    model.train()
    if seg:
        batch = seg_batch(ODD_HW)
    else:
        from mmdet.testing import demo_mm_inputs
        batch = demo_mm_inputs(1, image_shapes=[(3, *ODD_HW)], num_items=[2], with_mask=True)
    data = model.data_preprocessor(batch, training=True)
    assert tuple(data['inputs'].shape[-2:]) != (512, 512)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert math.isfinite(float(total.detach()))
    total.backward()
    no_grad = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'backbone parameters without a gradient: {no_grad}'


def test_mmseg_resnet_snippet(tmp_path, offline):
    """The docs' UperNet r50 snippet builds as written: the inherited zoo ResNet in
    model.pretrained is ignored with one warning, the snippet's init_cfg is kept."""
    text = snippet('mmseg::upernet/')
    path = tmp_path / 'dropin_seg_r50.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    assert cfg.model.pretrained == 'open-mmlab://resnet50_v1c'
    assert set(cfg.model.backbone) <= {'type', 'arch', 'init_cfg'}, 'ResNet arguments leaked'
    with mmengine_log() as records:
        model = build(cfg)
    warned = pretrained_warnings(records)
    assert len(warned) == 1
    assert 'open-mmlab://resnet50_v1c' in warned[0].getMessage()
    assert isinstance(model.backbone, CrossFormer)
    assert model.backbone.init_cfg == dict(type='Pretrained', checkpoint='checkpoints/crossformer-s.pth')
    assert list(cfg.model.decode_head.in_channels) == model.backbone.out_channels
    assert cfg.model.auxiliary_head.in_channels == (
        model.backbone.out_channels[cfg.model.auxiliary_head.in_index])

    # model.pretrained=None, as the docs say, silences it
    path.write_text(text.replace('model = dict(\n', 'model = dict(\n    pretrained=None,\n', 1))
    cfg = Config.fromfile(str(path))
    assert cfg.model.pretrained is None
    with mmengine_log() as records:
        build(cfg)
    assert not pretrained_warnings(records)


def test_mmseg_file_pretrained_and_init_cfg_refused(tmp_path):
    """A checkpoint file in model.pretrained plus a backbone init_cfg: which one
    loads is ambiguous, so the build fails and names model.pretrained."""
    text = snippet('mmseg::upernet/').replace(
        'model = dict(\n', "model = dict(\n    pretrained='some/file.pth',\n", 1)
    path = tmp_path / 'dropin_seg_both.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    assert cfg.model.pretrained == 'some/file.pth'
    with pytest.raises(ValueError, match=r'model\.pretrained'):
        build(cfg)


def test_family_table_matches_backbones():
    """The docs' per-family widths are what each default-arch backbone returns."""
    rows = re.findall(r'^\| `mmhybrid\.(\w+)`([^|]*)\| `(\w+)` \| `(\[[\d, ]+\])` \| (\d+) \|$',
                      DOC.read_text(), re.M)
    assert sorted(r[0] for r in rows) == sorted(SMALL_ARCH)
    for family, extra, arch, channels, aux in rows:
        kwargs = {k: ast.literal_eval(v) for k, v in re.findall(r'`(\w+)=(\w+)`', extra)}
        assert kwargs == FOUR_LEVELS.get(family, {}), family
        backbone = HYBRID_MODELS.build(dict(type=f'mmhybrid.{family}', **kwargs))
        assert backbone.arch_name == arch, family
        assert backbone.out_strides == [4, 8, 16, 32], family
        assert ast.literal_eval(channels) == backbone.out_channels, family
        assert int(aux) == backbone.out_channels[2], family
