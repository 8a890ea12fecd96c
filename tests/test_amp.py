"""Mixed precision (``tools/train.py --amp``) on the CPU: bf16 autocast, no loss scaling.

Every root config takes one optimizer step with the optimizer wrapper that
``--amp`` makes (the backbone shrunk as in test_configs.py); the detection
configs reach mmcv's NMS, RoIAlign and focal loss through mmhybrid's float32
versions of the heads that call them, which ``--amp`` swaps in (mmhybrid/engine/fp32_ops.py). The end-to-end
``tools/train.py --amp`` run (killed, resumed, tested) is in test_quickstart.py.
"""
import importlib.util
import math
import re
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from mmhybrid.engine import MixedPrecisionOptimWrapper
from mmhybrid.engine.amp import check_amp_dtype
from test_configs import (CONFIG_DIR, DET_TRAIN_SHAPE, FAMILIES, ROOT_CONFIGS, SEG_TRAIN_HW, build_model,
                          det_batch, family_of, seg_batch, shrink, task_of)

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / 'tools' / 'train.py'


@pytest.fixture(scope='module')
def train_tool():
    spec = importlib.util.spec_from_file_location('mmhybrid_tools_train_amp', TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def amp_config(train_tool, name):
    """The config as ``tools/train.py CONFIG --amp`` builds it (on this CPU), backbone shrunk."""
    args = Namespace(config=str(CONFIG_DIR / name), launcher='none', cfg_options=None, work_dir='unused',
                     amp=True, auto_scale_lr=False, resume=None)
    cfg = train_tool.build_config(args)
    cfg.model.backbone.init_cfg = None
    return shrink(cfg)


@pytest.mark.parametrize('name', ROOT_CONFIGS)
def test_amp_step_on_cpu_runs_the_backbone_in_bf16_and_updates_it(train_tool, name, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    torch.manual_seed(0)
    cfg = amp_config(train_tool, name)
    assert cfg.optim_wrapper.type == 'mmhybrid.MixedPrecisionOptimWrapper'
    types = str(cfg.model)
    assert not re.search(r"'type': '(mmdet\.)?(RPNHead|SingleRoIExtractor|FocalLoss)'", types)
    if task_of(cfg) == 'mmdet':
        assert 'mmhybrid.FP32' in types   # RetinaNet's focal loss, the two-stage RPN and RoI extractors
    if task_of(cfg) == 'mmseg':
        cfg.model.data_preprocessor.size = SEG_TRAIN_HW
        batch = seg_batch(SEG_TRAIN_HW, cfg.model.decode_head.num_classes, batch_size=2)
    else:
        batch = det_batch(DET_TRAIN_SHAPE, with_mask='mask_rcnn' in name)
    model = build_model(cfg, init=False)   # the layers' default init: what is checked is precision
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, MixedPrecisionOptimWrapper)
    assert wrapper.loss_scaler is None and wrapper.cast_dtype == torch.bfloat16

    # every linear layer and dense convolution of the backbone computes in bf16 (mmhybrid runs the
    # depthwise convolutions in fp32 on the CPU, where their bf16 backward is slow: layers.depthwise_conv)
    dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
             for m in model.backbone.modules()
             if isinstance(m, nn.Linear) or isinstance(m, nn.Conv2d) and m.groups == 1]
    stem_prefix = FAMILIES[family_of(cfg)]['stem']
    before = {k: v.detach().clone() for k, v in model.backbone.named_parameters() if k.startswith(stem_prefix)}
    model.train()
    log_vars = model.train_step(batch, wrapper)
    for hook in hooks:
        hook.remove()

    assert math.isfinite(float(log_vars['loss'])), log_vars
    assert dtypes and set(dtypes) == {torch.bfloat16}, set(dtypes)
    params = dict(model.backbone.named_parameters())
    assert before and all(params[k].dtype == torch.float32 for k in before)   # fp32 master weights
    assert [k for k, v in before.items() if not torch.equal(params[k], v)] == list(before)


def test_cpu_wrapper_scales_no_loss_and_reads_checkpoints_with_or_without_a_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    model = nn.Linear(4, 2)
    wrapper = MixedPrecisionOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with wrapper.optim_context(model):
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().pow(2).mean())
    state = wrapper.state_dict()
    assert 'loss_scaler' not in state and state['state']   # momentum buffers, nothing else
    # a float16 GPU run's checkpoint, resumed on the CPU: the scaler's state is dropped
    other = MixedPrecisionOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    other.load_state_dict(dict(state, loss_scaler={'scale': 1024.0, '_growth_tracker': 3}))
    assert other.loss_scaler is None
    assert torch.equal(other.optimizer.state_dict()['state'][0]['momentum_buffer'],
                       state['state'][0]['momentum_buffer'])


def test_amp_dtype_is_bf16_on_cpu_and_where_the_gpu_has_it_else_fp16(monkeypatch):
    assert check_amp_dtype('cpu', None) == torch.bfloat16
    assert check_amp_dtype('cpu', 'bfloat16') == torch.bfloat16
    with pytest.raises(ValueError, match='bfloat16 only'):
        check_amp_dtype('cpu', 'float16')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert check_amp_dtype('cuda', None) == torch.bfloat16
    assert check_amp_dtype('cuda', 'float16') == torch.float16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert check_amp_dtype('cuda', None) == torch.float16
    with pytest.raises(ValueError, match='does not support bfloat16'):
        check_amp_dtype('cuda', torch.bfloat16)


def test_use_fp32_ops_swaps_mmdet_types_at_any_depth_and_nothing_else():
    from mmhybrid.engine.fp32_ops import use_fp32_ops
    model = dict(type='CascadeRCNN', rpn_head=dict(type='mmdet.RPNHead', loss_cls=dict(type='CrossEntropyLoss')),
                 roi_head=dict(bbox_roi_extractor=[dict(type='SingleRoIExtractor'), dict(type='SingleRoIExtractor')],
                               bbox_head=dict(type='Shared2FCBBoxHead', loss_cls=dict(type='FocalLoss'))),
                 other=dict(type='mmhybrid.FP32FocalLoss'), seg=dict(type='mmseg.FocalLoss'))
    assert use_fp32_ops(model) == ['mmdet.RPNHead', 'SingleRoIExtractor', 'SingleRoIExtractor', 'FocalLoss']
    assert model['rpn_head']['type'] == 'mmhybrid.FP32ProposalRPNHead'
    assert [r['type'] for r in model['roi_head']['bbox_roi_extractor']] == ['mmhybrid.FP32SingleRoIExtractor'] * 2
    assert model['roi_head']['bbox_head']['loss_cls']['type'] == 'mmhybrid.FP32FocalLoss'
    assert model['rpn_head']['loss_cls']['type'] == 'CrossEntropyLoss' and model['seg']['type'] == 'mmseg.FocalLoss'


def test_configure_mixed_precision_swaps_the_wrapper_and_refuses_in_one_line(monkeypatch):
    """The set-up ``tools/train.py --amp`` and the GPU check share (train.py prints its errors)."""
    from mmengine.config import Config

    from mmhybrid.engine import configure_mixed_precision
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(default_scope='mmdet', optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                      model=dict(type='RetinaNet', bbox_head=dict(loss_cls=dict(type='FocalLoss')))))
    assert configure_mixed_precision(cfg, explicit=True) == ('cpu', torch.bfloat16)
    assert cfg.optim_wrapper.type == 'mmhybrid.MixedPrecisionOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.model.bbox_head.loss_cls.type == 'mmhybrid.FP32FocalLoss'
    other = Config(dict(optim_wrapper=dict(type='ApexOptimWrapper')))
    with pytest.raises(ValueError, match=r"^--amp replaces optim_wrapper.type, and the config sets it to "
                                         r"'ApexOptimWrapper'; remove --amp or that type$"):
        configure_mixed_precision(other, explicit=True)
    fp16 = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', dtype='float16')))
    with pytest.raises(ValueError, match="^the config's AmpOptimWrapper: mixed precision on the CPU runs in "
                                         "bfloat16 only"):
        configure_mixed_precision(fp16, explicit=False)
    assert 'loss_scale' not in fp16.optim_wrapper
