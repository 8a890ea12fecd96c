"""The behaviour every family shares (mmhybrid.models.base): the base class on CrossFormer and on a toy,
then the contract suite, each shared behaviour once over the small arch of every family (family_archs.py).
The family files keep only what is particular to a family."""
import copy
import io
import pickle
import subprocess
import sys
import warnings
from itertools import chain
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmhybrid.models import CrossFormer
from mmhybrid.models.base import HybridBackbone
from mmhybrid.models.layers import DropPath

from family_archs import OLD_LAYOUT_FAMILIES, SMALL_ARCH, old_layout_state, randomize

TINY = dict(embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))


def test_unknown_arch_error_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        CrossFormer(arch='huge')
    for name in ('tiny', 'small', 'base', 'large', 's'):
        assert name in str(err.value)


def test_custom_arch_dict_missing_keys_is_refused():
    with pytest.raises(ValueError, match='num_heads'):
        CrossFormer(arch=dict(embed_dims=32, depths=(1, 1, 1, 1)))


class _BNBackbone(HybridBackbone):
    """A two-stage toy with BatchNorm, to exercise norm_eval."""

    def __init__(self, **kwargs):
        super().__init__(out_indices=(0, 1), **kwargs)

    def build(self, spec):
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4))
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), nn.BatchNorm2d(4))
                                     for _ in range(2)])
        return [4, 4], [4, 8]

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


_IMPORTED = 'mmdet or mmseg imported:'


@pytest.fixture(scope='module')
def fresh_interpreter():
    """One new Python process (a process costs seconds): it imports mmhybrid, says whether mmdet or
    mmseg came with it, then builds and initialises every family as plain Python would."""
    code = ('import sys; sys.path.insert(0, "tests"); import mmhybrid\n'
            f'print("{_IMPORTED}", any(m.split(".")[0] in ("mmdet", "mmseg") for m in sys.modules), flush=True)\n'
            'from family_archs import SMALL_ARCH\n'
            'for family, arch in SMALL_ARCH.items():\n'
            '    mmhybrid.MODELS.build(dict(type=f"mmhybrid.{family}", arch=arch)).init_weights()\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_importing_mmhybrid_does_not_import_mmdet_or_mmseg(fresh_interpreter):
    assert fresh_interpreter.stdout.splitlines()[0] == f'{_IMPORTED} False'


def test_init_weights_outside_a_runner_prints_at_most_a_few_lines(fresh_interpreter):
    """mmengine's per-parameter initialisation dump goes to a Runner's log file, not to a plain console."""
    result = fresh_interpreter
    lines = [line for line in (result.stdout + result.stderr).splitlines() if 'Warning' not in line
             and not line.startswith(('  ', _IMPORTED))]
    assert len(lines) <= 5, '\n'.join(lines[:20])


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


# --------------------------------------------------------------------------------------
# The contract: each behaviour every family shares, one test over the small arch of every
# family (family_archs.py). Inputs are small, mostly 1 x 3 x 70 x 90 (odd stride-32 sides),
# so that the kernels made for one test serve the next.
# --------------------------------------------------------------------------------------
_BN_STATISTICS = ('running_mean', 'running_var', 'num_batches_tracked')


def _build(family, **kwargs):
    from mmhybrid.registry import MODELS
    return MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], **kwargs))


def _loss(outs) -> torch.Tensor:
    """Weighs every element differently: a plain mean of a normalised map has no gradient."""
    return sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).mean() for o in outs)


def _ceil_shapes(model, batch: int, h: int, w: int) -> list:
    return [(batch, c, -(-h // s), -(-w // s)) for c, s in zip(model.out_channels, model.out_strides)]


def _close(actual, expected, rel: float = 1e-5) -> None:
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=rel, atol=rel * max(1.0, b.abs().max().item()))


def _assert_same_maps(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))


#: the families with BatchNorm layers (norm_eval applies to them)
BN_FAMILIES = [f for f in SMALL_ARCH if any(isinstance(m, _BatchNorm) for m in _build(f).modules())]


#: families whose official stochastic depth rises linearly from 0 over all blocks of all stages: a full
#: arch and its block count (Conformer's rule spans the transformer branch only and CvT's ramps inside
#: each stage: their files test those)
LINEAR_DROP_PATH = {'CrossFormer': ('small', 12), 'CrossFormerPP': ('pp_small', 24), 'Conv2Former': ('tiny', 21),
                    'CloFormer': ('s', 12)}


@pytest.mark.parametrize('family', list(LINEAR_DROP_PATH))
def test_drop_path_rises_linearly_over_all_blocks(family):
    from mmhybrid.registry import MODELS
    arch, blocks = LINEAR_DROP_PATH[family]
    with torch.device('meta'):
        model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=arch, drop_path_rate=0.3))
    rates = [getattr(m.drop_path, 'drop_prob', 0.0) for m in model.modules() if hasattr(m, 'drop_path')]
    assert rates == pytest.approx([0.3 * i / (blocks - 1) for i in range(blocks)])


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_any_input_size_gives_ceil_strides(family):
    """Odd, tiny and elongated inputs: map k is ceil(H / s_k) x ceil(W / s_k), contiguous and finite."""
    model = _build(family).eval()
    assert model.out_strides == [4, 8, 16, 32][:len(model.out_strides)]
    with torch.no_grad():
        for h, w in [(70, 90), (65, 97), (64, 64), (112, 137), (33, 250), (200, 41), (1, 3)]:
            outs = model(torch.randn(1, 3, h, w))
            assert [tuple(o.shape) for o in outs] == _ceil_shapes(model, 1, h, w), (h, w)
            assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs), (h, w)


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


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_batch_items_are_independent(family):
    model = randomize(_build(family)).eval()
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        both, second = model(x), model(x[1:])
    _close([o[1:] for o in both], second)


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_out_indices_subset_comes_back_in_stage_order_with_its_channels_and_strides(family):
    """Negative indices count from the end, the caller's list is left alone, the maps (the full
    network's) come in stage order whatever order was asked, out_channels/out_strides describe them."""
    full = _build(family).eval()
    num = len(full.stage_modules())
    indices = [-1, 1]
    model = _build(family, out_indices=indices).eval()
    assert indices == [-1, 1] and model.out_indices == (1, num - 1)
    assert model.out_channels == [full.out_channels[1], full.out_channels[-1]]
    assert model.out_strides == [full.out_strides[1], full.out_strides[-1]]
    model.load_state_dict(full.state_dict())
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        maps, outs = full(x), model(x)
    assert [tuple(o.shape) for o in outs] == _ceil_shapes(model, 1, 70, 90)
    _close(outs, [maps[1], maps[-1]])
    with pytest.raises(ValueError, match=f'out of range for {num} stages'):
        _build(family, out_indices=(num, ))


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


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_wrong_channel_count_and_non_4d_input_are_refused_and_in_channels_is_honoured(family):
    model = _build(family)
    with pytest.raises(ValueError, match='expects 3 input channels.*got 4'):
        model(torch.randn(1, 4, 70, 90))
    with pytest.raises(ValueError, match='4D NCHW'):
        model(torch.randn(3, 70, 90))
    gray = _build(family, in_channels=1).eval()
    with torch.no_grad():
        assert [tuple(o.shape) for o in gray(torch.randn(1, 1, 70, 90))] == _ceil_shapes(gray, 1, 70, 90)


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
    if dtype == torch.float64:   # training: float64 gradients reach every parameter (float32: see below)
        outs = model.train()(x.to(dtype))
        assert all(o.dtype == dtype for o in outs)
        sum(o.square().mean() for o in outs).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads)


# relative (norm) error of each autocast map against the fp32 map (measured: bf16 <= 9e-3, fp16 <= 1.2e-3)
_AUTOCAST_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 1e-2}


@pytest.mark.parametrize('device,dtype', [('cpu', torch.bfloat16), ('cpu', torch.float16), ('cuda', torch.float16)],
                         ids=['cpu-bf16', 'cpu-fp16', 'cuda-fp16'])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_autocast_returns_one_dtype_and_maps_close_to_fp32(family, device, dtype):
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    model = _build(family).to(device).eval()
    x = torch.randn(1, 3, 70, 90, device=device)
    with torch.no_grad():
        ref = model(x)
    for train in (False, True):   # (training updates BatchNorm statistics: inference first)
        model.train(train)
        with torch.autocast(device, dtype=dtype), torch.set_grad_enabled(train):
            outs = model(x)
        assert [o.dtype for o in outs] == [dtype] * len(outs), f'train={train}'
        assert all(torch.isfinite(o).all() for o in outs)
        if train:
            sum(o.float().mean() for o in outs).backward()
        else:
            for k, (o, r) in enumerate(zip(outs, ref)):
                err = ((o.float() - r).norm() / r.norm()).item()
                assert err < _AUTOCAST_TOLERANCE[dtype], f'map {k}: relative error {err:.2e}'


def _clear_family_caches(family):
    """Empty the family's per-shape caches, so that the next call fills them."""
    module = sys.modules[type(_build(family)).__module__]
    for obj in list(vars(module).values()):
        if callable(getattr(obj, 'cache_clear', None)):
            obj.cache_clear()


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_cache_does_not_depend_on_the_mode_of_the_first_call(family):
    """A per-shape cache filled under inference_mode must still serve a later training step."""
    _clear_family_caches(family)
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


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_forward_changes_no_module_state_so_maps_do_not_depend_on_earlier_calls(family):
    """Training (norm_eval: BatchNorm statistics are state) and inference at two sizes leave every
    parameter, buffer (persistent or not) and module attribute as it was: the maps of an input
    come out bit-identical whatever ran before."""
    model = _build(family, norm_eval=True)

    def state():
        return dict(chain(model.named_parameters(), model.named_buffers()))

    before = {k: v.detach().clone() for k, v in state().items()}
    attributes = {name: set(vars(m)) for name, m in model.named_modules()}
    x, other = torch.randn(1, 3, 70, 90), torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        first = model.eval()(x)
    model.train()
    _loss(model(other)).backward()
    model(x)
    with torch.no_grad():
        model.eval()(other)
        again = model(x)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    after = state()
    assert after.keys() == before.keys()
    assert [k for k, v in before.items() if not torch.equal(after[k], v)] == []
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attributes


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_deepcopy_pickle_and_state_dict_round_trips_give_identical_maps(family):
    """After a forward (per-shape caches filled): a deep copy, a pickled copy, and a new backbone
    loading the state dict saved and read back by the safe loader compute the same maps bit for bit."""
    model = randomize(_build(family)).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        ref = model(x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = _build(family)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    copies = {'deepcopy': copy.deepcopy(model), 'pickle': pickle.loads(pickle.dumps(model)), 'state_dict': loaded}
    for how, other in copies.items():
        with torch.no_grad():
            outs = other.eval()(x)
        assert all(torch.equal(a, b) for a, b in zip(outs, ref, strict=True)), how


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
def test_training_step_reaches_every_parameter_and_writes_only_batchnorm_statistics(family):
    """Every parameter (output norms too) gets a finite gradient; the forward writes nothing into the
    module but those statistics. (With frozen statistics: the norm_eval test.)"""
    model = _build(family, out_norms=True, norm_eval=False).train()
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(_BN_STATISTICS)}
    _loss(model(torch.randn(1, 3, 70, 90))).backward()
    assert all(p.requires_grad for p in model.parameters())
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []
    assert [k for k, v in weights.items() if not torch.equal(model.state_dict()[k], v)] == []


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_with_cp_checkpoints_the_blocks_and_gives_the_same_outputs_and_gradients(family, monkeypatch):
    """With training-mode and with frozen (norm_eval) BatchNorm statistics, if any; every gradient compared."""
    import mmhybrid.models.base as base
    calls, real = [], base.checkpoint
    monkeypatch.setattr(base, 'checkpoint', lambda *args, **kw: calls.append(1) or real(*args, **kw))
    x = torch.randn(2, 3, 70, 90)
    for norm_eval in (False, True) if family in BN_FAMILIES else (False, ):
        plain = randomize(_build(family, drop_path_rate=0.0, norm_eval=norm_eval))
        cp = _build(family, drop_path_rate=0.0, norm_eval=norm_eval, with_cp=True)
        cp.load_state_dict(plain.state_dict())
        outs, grads = [], []
        for model in (plain, cp):
            calls.clear()
            model.train()
            out = model(x)
            _loss(out).backward()
            assert bool(calls) is model.with_cp, f'norm_eval={norm_eval}'
            outs.append([o.detach() for o in out])
            grads.append({n: p.grad for n, p in model.named_parameters()})
        _close(outs[1], outs[0])
        for name, g in grads[0].items():
            torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5 * max(1.0, g.abs().max().item()),
                                       msg=lambda m, name=name: f'{name} (norm_eval={norm_eval}): {m}')


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_frozen_stages_freeze_the_stem_then_whole_stages_and_stay_frozen(family):
    """frozen_stages=k: the stem (k >= 0) and stages 0..k-1 have requires_grad=False and are in eval
    mode from construction on, also after .train(); their BatchNorm statistics stay while training;
    the rest (output norms too) trains. Parameters outside the stem and stage modules (a class
    token) are the family's to test."""
    num = len(_build(family).stage_modules())
    with pytest.raises(ValueError, match=rf'frozen_stages must be in -1..{num}'):
        _build(family, frozen_stages=num + 1)
    x = torch.randn(1, 3, 70, 90)
    for frozen in (-1, 0, 1, num):
        model = _build(family, frozen_stages=frozen, norm_eval=False, out_norms=True)
        parts = [model.stem_modules()] + [[stage] for stage in model.stage_modules()]
        frozen_modules = {id(m) for part in parts[:frozen + 1] for top in part for m in top.modules()}
        frozen_params = {id(p) for part in parts[:frozen + 1] for top in part for p in top.parameters()}
        covered = {id(p) for part in parts for top in part for p in top.parameters()}
        covered |= {id(p) for p in model.out_norms.parameters()}

        def check(when):
            for name, p in model.named_parameters():
                if id(p) in covered:
                    assert p.requires_grad is (id(p) not in frozen_params), (frozen, when, name)
            for name, m in model.named_modules():
                assert m.training is (id(m) not in frozen_modules), (frozen, when, name)

        check('built')
        model.eval().train()
        check('.train()')
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and id(m) in frozen_modules]
        stats = [bn.running_mean.clone() for bn in bns]
        with torch.no_grad():
            model(x)
        assert all(torch.equal(bn.running_mean, s) for bn, s in zip(bns, stats)), frozen


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_stem_and_stages_are_registered_submodules_and_the_same_objects_on_every_call(family):
    """What frozen_stages, layer decay, timm's feature_info (a module name per stage) and hooks rely
    on: every stem and stage module is part of the backbone itself, not a container made per call."""
    model = _build(family)
    registered = {id(m) for _, m in model.named_modules()}
    stem, stages = model.stem_modules(), model.stage_modules()
    assert stem and len(stages) == len(model.stage_channels)
    assert [m for m in stem + stages if id(m) not in registered] == []
    assert all(a is b for a, b in zip(model.stem_modules(), stem, strict=True))
    assert all(a is b for a, b in zip(model.stage_modules(), stages, strict=True))


class _Detector(nn.Module):
    """A backbone under ``backbone.`` with a head, as in mmdet/mmseg models."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(3, 2, 1)


@pytest.mark.parametrize('family', OLD_LAYOUT_FAMILIES)
def test_state_dicts_of_the_earlier_layout_still_load_alone_and_in_a_whole_detector(family, tmp_path):
    """Files saved before the stages became modules (the official names) load strictly into the backbone
    (load_state_dict) and into a detector (torch, and mmengine's load_checkpoint, what load_from runs),
    giving the same maps; the caller's dict is left as it was, and a current one loads as before."""
    from mmengine.runner.checkpoint import load_checkpoint

    source = randomize(_build(family)).eval()
    old = old_layout_state(source)
    assert len(old) == len(source.state_dict()) and set(old) != set(source.state_dict())
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        ref = source(x)

    def same_maps(backbone):
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(backbone.eval()(x), ref, strict=True))

    backbone = _build(family)
    before = dict(old)
    backbone.load_state_dict(old)   # strict
    assert list(old) == list(before) and all(old[k] is v for k, v in before.items())
    same_maps(backbone)

    detector = _Detector(_build(family))
    whole = {**{f'backbone.{k}': v for k, v in old.items()}, 'head.weight': torch.randn(2, 3, 1, 1),
             'head.bias': torch.zeros(2)}
    detector.load_state_dict(whole)
    same_maps(detector.backbone)

    path = tmp_path / 'detector_epoch_12.pth'
    torch.save({'meta': {'epoch': 12}, 'state_dict': whole}, path)
    detector = _Detector(_build(family))
    load_checkpoint(detector, str(path), strict=True)
    same_maps(detector.backbone)
    assert torch.equal(detector.head.weight, whole['head.weight'])

    current = _build(family)
    current.load_state_dict(source.state_dict())
    same_maps(current)
    # a dict with both names for one tensor keeps the old key, which the strict load names
    with pytest.raises(RuntimeError, match='Unexpected key'):
        _build(family).load_state_dict({**source.state_dict(), **old})


@pytest.mark.parametrize('family', BN_FAMILIES)
def test_norm_eval_keeps_batchnorm_statistics_and_trains_everything_else(family):
    """norm_eval=True: BatchNorm layers in eval mode while training, their statistics fixed (training
    maps equal the inference maps), every parameter (their affine terms too) learning; every other
    module trains. norm_eval=False: every BatchNorm normalises with batch statistics and updates them
    once per step."""
    x = torch.randn(2, 3, 70, 90)
    for norm_eval in (True, False):
        model = randomize(_build(family, norm_eval=norm_eval, drop_path_rate=0.0)).train()
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
        outs = model(x)
        _loss(outs).backward()
        assert all(bn.training is not norm_eval for bn in bns)
        assert all(m.training for m in model.modules() if not isinstance(m, _BatchNorm))
        assert all(p.requires_grad for p in model.parameters())
        assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []
        kept = [torch.equal(bn.running_mean, m) and torch.equal(bn.running_var, v) for bn, (m, v) in zip(bns, stats)]
        if norm_eval:
            assert all(kept)
            with torch.no_grad():
                _close([o.detach() for o in outs], model.eval()(x))
        else:
            assert not any(kept) and all(bn.num_batches_tracked.item() == 1 for bn in bns)
    dropping = _build(family, norm_eval=True, drop_path_rate=0.1).train()   # stochastic depth keeps training
    assert any(isinstance(m, DropPath) for m in dropping.modules())
    assert all(m.training for m in dropping.modules() if not isinstance(m, _BatchNorm))


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_batchnorm_statistics_train_until_weights_are_loaded_when_norm_eval_is_none(family):
    from mmhybrid.registry import MODELS
    model = MODELS.build(dict(type=f'mmhybrid.{family}', arch=SMALL_ARCH[family], norm_eval=None)).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert model.norm_eval is False and all(bn.training for bn in bns)
    model.load_state_dict(model.state_dict())
    model.train()
    assert model.norm_eval is True and not any(bn.training for bn in bns)
    stats = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(1, 3, 70, 90))
    assert all(torch.equal(bn.running_mean, s) for bn, s in zip(bns, stats))


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
    stem_params = {id(p) for m in model.stem_modules() for p in m.parameters()}
    stem = {n for n, p in model.named_parameters() if id(p) in stem_params}
    assert stem and {ids[n] for n in stem} == {0}
    per_stage = []
    for stage in model.stage_modules():
        own_params = {id(p) for p in stage.parameters()}
        own = [ids[n] for n, p in model.named_parameters() if n not in stem and id(p) in own_params]
        per_stage.append((min(own), max(own)))
    official_convnext = family == 'Conv2Former'   # ConvNeXt's rules: stage-wise, every downsampling at 0
    if not (official_convnext and decay_type == 'stage_wise'):
        assert all(a[1] <= b[0] for a, b in zip(per_stage, per_stage[1:])), per_stage
        assert per_stage[0][0] >= 1
    assert max(hi for _, hi in per_stage) <= num_layers
    assert {ids[n] for n in ids if n.startswith('out_norms.')} == {num_layers + 1}
    if decay_type == 'layer_wise' and not official_convnext:
        assert per_stage[-1][1] == num_layers


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_a_traced_forward_leaves_no_placeholder_tensors_for_later_calls(family):
    """torch.export / torch.compile run the model on fake tensors: nothing made then may be cached
    (a later eager call at that size, or a second export, would get placeholders)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    _clear_family_caches(family)
    model = _build(family).eval()
    x = torch.randn(1, 3, 52, 76)
    with torch.no_grad():
        with FakeTensorMode(allow_non_fake_inputs=True):
            model(x)
        maps = model(x)
    assert all(type(m) is torch.Tensor for m in maps)


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_training_never_needs_the_math_attention_kernel(family, device):
    """With SDPA limited to its fused kernels (flash, memory-efficient, cuDNN), a training step in fp32
    and in low-precision autocast runs: no attention call falls back to the math kernel, which keeps
    the whole score matrix (CrossFormer's trained position bias included)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    model = _build(family).to(device).train()
    x = torch.randn(2, 3, 70, 90, device=device)
    low = torch.bfloat16 if device == 'cpu' or torch.cuda.is_bf16_supported() else torch.float16
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(fused), torch.autocast(device, dtype=low, enabled=amp):
            outs = model(x)
            _loss(outs).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), f'amp={amp}'
