"""The drop-in story of docs/dropin.md, run as written.

A user inherits mmdet's / mmseg's own shipped Swin config, replaces the
backbone with ``_delete_=True, type='mmhybrid.CrossFormer'`` and sets the
neck / decode head widths. The snippets are read from docs/dropin.md itself,
so the documentation cannot drift from what works.
"""
import ast
import math
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from mmhybrid.models import CrossFormer

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
    cfg = load(snippet('mmseg::'), tmp_path, 'dropin_seg.py')
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
