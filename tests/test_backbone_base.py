"""The behaviour every family shares (mmhybrid.models.base), shown on CrossFormer."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmhybrid.models import CrossFormer
from mmhybrid.models.base import HybridBackbone

from family_archs import SMALL_ARCH

TINY = dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))


def test_unknown_arch_error_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        CrossFormer(arch='huge')
    for name in ('tiny', 'small', 'base', 'large', 's'):
        assert name in str(err.value)


def test_custom_arch_dict_missing_keys_is_refused():
    with pytest.raises(ValueError, match='num_heads'):
        CrossFormer(arch=dict(embed_dims=32, depths=(1, 1, 1, 1)))


def test_out_indices_accept_negatives_and_leave_the_callers_list_alone():
    indices = [-1, 1]
    model = CrossFormer(arch=TINY, out_indices=indices).eval()
    assert indices == [-1, 1]
    assert model.out_indices == (1, 3) and model.out_channels == [64, 256]  # stage order, as the maps
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 256]  # in stage order
    with pytest.raises(ValueError, match='out of range'):
        CrossFormer(arch=TINY, out_indices=(4, ))


@pytest.mark.parametrize('frozen', [-1, 0, 1, 4])
def test_frozen_stages_freeze_stem_then_stages_and_stay_frozen_in_train_mode(frozen):
    model = CrossFormer(arch=TINY, frozen_stages=frozen)
    parts = [model.patch_embed] + list(model.layers)

    def check():
        for k, part in enumerate(parts):
            expect_frozen = k <= frozen
            assert all(p.requires_grad != expect_frozen for p in part.parameters())
            assert all(m.training != expect_frozen for m in part.modules()) or not model.training

    check()                       # right after construction
    model.train()
    check()
    assert all(not m.training for m in parts[0].modules()) == (frozen >= 0)
    with pytest.raises(ValueError, match='frozen_stages'):
        CrossFormer(arch=TINY, frozen_stages=5)


class _BNBackbone(HybridBackbone):
    """A two-stage toy with BatchNorm, to exercise norm_eval."""

    def __init__(self, **kwargs):
        super().__init__(out_indices=(0, 1), **kwargs)
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4))
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), nn.BatchNorm2d(4))
                                     for _ in range(2)])
        self._finish_init([4, 4], [4, 8])

    def stem_modules(self):
        return [self.stem]

    def stage_modules(self):
        return list(self.stages)

    def forward(self, x):
        self.check_input(x)
        x = self.stem(x)
        return tuple(x := stage(x) for stage in self.stages)


@pytest.mark.parametrize('norm_eval', [False, True])
def test_norm_eval_keeps_batchnorm_statistics_fixed_while_training(norm_eval):
    model = _BNBackbone(norm_eval=norm_eval).train()
    bn = model.stages[1][1]
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 16, 16))
    assert bn.training is not norm_eval
    assert torch.equal(bn.running_mean, before) is norm_eval


def test_wrong_channel_count_and_non_4d_input_get_clear_errors():
    model = CrossFormer(arch=TINY)
    with pytest.raises(ValueError, match='expects 3 input channels.*got 4'):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match='4D NCHW'):
        model(torch.randn(3, 64, 64))
    four = CrossFormer(arch=TINY, in_channels=4).eval()
    with torch.no_grad():
        assert four(torch.randn(1, 4, 64, 64))[0].shape == (1, 32, 16, 16)


def test_deprecated_pretrained_becomes_a_pretrained_init_cfg():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = CrossFormer(arch=TINY, pretrained='x.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='x.pth')
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    with pytest.raises(ValueError, match=r'both init_cfg=.* and pretrained=.*model\.pretrained'):
        CrossFormer(arch=TINY, pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='y'))


def test_a_model_zoo_pretrained_from_the_host_config_is_ignored_with_a_warning_naming_it(caplog):
    """mmseg's ResNet configs set model.pretrained='open-mmlab://resnet50_v1c', which EncoderDecoder
    passes into the backbone: another network's weights, ignored with a warning, init_cfg kept."""
    import logging
    init_cfg = dict(type='Pretrained', checkpoint='crossformer.pth')
    with caplog.at_level(logging.WARNING, logger='mmengine'):
        model = CrossFormer(arch=TINY, pretrained='open-mmlab://resnet50_v1c', init_cfg=init_cfg)
    assert model.init_cfg == init_cfg
    assert CrossFormer(arch=TINY, pretrained='torchvision://resnet50').init_cfg is None


def test_importing_mmhybrid_does_not_import_mmdet_or_mmseg():
    code = 'import sys, mmhybrid; print(any(m.split(".")[0] in ("mmdet", "mmseg") for m in sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', None])
def test_scoped_type_builds_from_mmdet_mmseg_and_plain_registries(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type='mmhybrid.CrossFormer', arch=TINY))
    assert isinstance(model, CrossFormer)


@pytest.mark.parametrize('family', ['CrossFormer', 'Conv2Former', 'CloFormer', 'Conformer', 'CvT'])
def test_out_channels_and_strides_follow_the_returned_maps_for_unordered_out_indices(family):
    from mmhybrid.registry import MODELS
    backbone = MODELS.build(dict(type=f'mmhybrid.{family}', out_indices=(-1, 1))).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == backbone.out_channels
    assert [64 // o.shape[-1] for o in outs] == backbone.out_strides




@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_stages_after_the_last_output_are_not_run(family, stages_that_run):
    """out_indices=(0, 1) computes the first two stages only, with the same maps as a full run."""
    from mmhybrid.registry import MODELS
    full = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family])).eval()
    early = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], out_indices=(0, 1))).eval()
    early.load_state_dict(full.state_dict())
    ran = stages_that_run(early)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps, first_two = full(x), early(x)
    assert ran == {0, 1}
    for a, b in zip(maps[:2], first_two):  # (oneDNN may pick other kernels: float noise only)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def _build(family, **kwargs):
    from mmhybrid.registry import MODELS
    return MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], **kwargs))


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_batch_of_zero_images_gives_empty_maps_of_the_right_shape(family):
    model = _build(family).eval()
    with torch.no_grad():
        one = model(torch.randn(1, 3, 70, 90))
        empty = model(torch.randn(0, 3, 70, 90))
    assert [o.shape[1:] for o in empty] == [o.shape[1:] for o in one]
    assert all(o.shape[0] == 0 for o in empty)
    assert [o.shape[1] for o in empty] == model.out_channels
    assert [tuple(o.shape[2:]) for o in empty] == [(-(-70 // s), -(-90 // s)) for s in model.out_strides]
    model.train()   # training too (BatchNorm in train mode, autograd recording)
    empty = model(torch.randn(0, 3, 70, 90, requires_grad=True))
    assert [o.shape for o in empty] == [(0, ) + o.shape[1:] for o in one]
    sum(o.sum() for o in empty).backward()
    assert all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


# relative (norm) error of each map against the fp32 maps
_DTYPE_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-2}


@pytest.mark.parametrize('dtype', list(_DTYPE_TOLERANCE), ids=lambda d: str(d).split('.')[-1])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_parameters_in_any_float_dtype_give_maps_in_that_dtype(family, dtype):
    model = _build(family).eval()
    x = torch.randn(1, 3, 40, 56)   # small: grouped fp16/fp64 convolutions are slow on CPU
    with torch.no_grad():
        ref = model(x)
    model.to(dtype)
    with torch.no_grad():
        outs = model(x.to(dtype))
    assert [o.dtype for o in outs] == [dtype] * len(ref)
    for o, r in zip(outs, ref):
        assert torch.isfinite(o).all()
        err = ((o.double() - r.double()).norm() / r.double().norm()).item()
        assert err < _DTYPE_TOLERANCE[dtype], f'relative error {err:.2e}'
    if dtype in (torch.float32, torch.float64):   # training: gradients in that dtype reach every parameter
        outs = model.train()(x.to(dtype))
        assert all(o.dtype == dtype for o in outs)
        sum(o.square().mean() for o in outs).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.bfloat16), ('cuda', torch.float16)])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_autocast_returns_one_dtype_for_every_map(family, device, dtype):
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    model = _build(family).to(device)
    x = torch.randn(1, 3, 70, 90, device=device)
    for train in (True, False):
        model.train(train)
        with torch.autocast(device, dtype=dtype), torch.set_grad_enabled(train):
            outs = model(x)
        assert [o.dtype for o in outs] == [dtype] * len(outs), f'train={train}'
        assert all(torch.isfinite(o).all() for o in outs)
        if train:
            sum(o.float().mean() for o in outs).backward()


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_cache_does_not_depend_on_the_mode_of_the_first_call(family):
    """A per-shape cache filled under inference_mode must still serve a later training step."""
    module = sys.modules[type(_build(family)).__module__]
    for obj in list(vars(module).values()):   # empty the family's caches, so the next call fills them
        if callable(getattr(obj, 'cache_clear', None)):
            obj.cache_clear()
    model = _build(family).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.inference_mode():
        first = model(x)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(x)
    recorded = model(x)   # autograd records (the plain path): same maps from the same cache
    for a, b in zip(first, recorded):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5 * b.abs().max().item())
    model.train()
    outs = model(x)
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_init_weights_outside_a_runner_prints_at_most_a_few_lines():
    """mmengine's per-parameter initialisation dump goes to a Runner's log file, not to a plain console."""
    code = ('import sys; sys.path.insert(0, "tests"); import mmhybrid; from family_archs import SMALL_ARCH\n'
            'for family, arch in SMALL_ARCH.items():\n'
            '    mmhybrid.MODELS.build(dict(type=f"mmhybrid.{family}", arch=arch)).init_weights()\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if 'Warning' not in line
             and not line.startswith('  ')]
    assert len(lines) <= 5, '\n'.join(lines[:20])


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_batchnorm_statistics_train_until_weights_are_loaded_when_norm_eval_is_none(family):
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], norm_eval=None)).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert model.norm_eval is False and all(bn.training for bn in bns)
    model.load_state_dict(model.state_dict())
    model.train()
    assert model.norm_eval is True and not any(bn.training for bn in bns)


def _assert_same_maps(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_jit_trace_and_export_under_no_grad_give_the_eager_maps(family):
    """The fused oneDNN inference paths step aside while tracing/exporting: what is recorded is the
    plain path, which runs anywhere."""
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family])).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        eager = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        _assert_same_maps(eager, traced(x))
        exported = torch.export.export(model, (x, ), strict=False)
        _assert_same_maps(eager, exported.module()(x))


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_forward_hooks_fire_on_every_module_in_inference(family):
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family])).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))   # modules that run at all (no hooks)
    called, ran = set(), set()
    leaves = {name: m for name, m in model.named_modules() if not list(m.children()) and list(m.parameters())}
    handles = [m.register_forward_hook(lambda *_, name=name: called.add(name)) for name, m in leaves.items()]
    with torch.no_grad():
        eager = model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    # the same modules run in training (no fused path there): each of them must have fired above
    handles = [m.register_forward_hook(lambda *_, name=name: ran.add(name)) for name, m in leaves.items()]
    model.train()
    model(torch.randn(2, 3, 64, 64))
    for h in handles:
        h.remove()
    assert ran and ran <= called, sorted(ran - called)[:10]
    assert eager


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_out_norms_put_one_norm_on_every_returned_map(family):
    """Off by default (the official network); on, a channels-first LayerNorm per returned map,
    named out_norms.<stage>, applied to the map the backbone would otherwise return."""
    from mmhybrid.registry import MODELS
    plain = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], out_indices=(1, -1))).eval()
    normed = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], out_indices=(1, -1),
                               out_norms=True)).eval()
    assert plain.out_norms is None and not any(k.startswith('out_norms.') for k in plain.state_dict())
    assert sorted(normed.out_norms) == sorted(str(i) for i in normed.out_indices)
    missing, _ = normed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == sorted(f'out_norms.{i}.{p}' for i in normed.out_indices for p in ('weight', 'bias'))
    for norm in normed.out_norms.values():
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        for i, a, b in zip(normed.out_indices, plain(x), normed(x)):
            torch.testing.assert_close(b, normed.out_norms[str(i)](a), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_every_family_has_layer_decay_ids_from_stem_to_last_stage(family, decay_type):
    """Stem 0, ids never decreasing along the stages, the last stage at num_layers, output norms at
    the heads' rate: so any family's config may use mmhybrid.LayerDecayOptimizerConstructor."""
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], out_norms=True))
    num_layers = 6
    ids = {n: model.layer_decay_id(n, num_layers, decay_type) for n, _ in model.named_parameters()}
    stem = {n for m in model.stem_modules() for n, p in model.named_parameters()
            if any(p is q for q in m.parameters())}
    assert stem and {ids[n] for n in stem} == {0}
    per_stage = []
    for stage in model.stage_modules():
        own = [ids[n] for n, p in model.named_parameters() if n not in stem
               and any(p is q for q in stage.parameters())]
        per_stage.append((min(own), max(own)))
    official_convnext = family == 'Conv2Former'   # ConvNeXt's rules: stage-wise, every downsampling at 0
    if not (official_convnext and decay_type == 'stage_wise'):
        assert all(a[1] <= b[0] for a, b in zip(per_stage, per_stage[1:])), per_stage
        assert per_stage[0][0] >= 1
    assert max(hi for _, hi in per_stage) <= num_layers
    assert {ids[n] for n in ids if n.startswith('out_norms.')} == {num_layers + 1}
    if decay_type == 'layer_wise' and not official_convnext:
        assert per_stage[-1][1] == num_layers
