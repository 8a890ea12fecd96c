"""timm's model conventions, checked on every name mmhybrid registers in timm.

What timm's own model tests ask of a model (written here for mmhybrid, not copied):
forward and backward reaching every parameter, the pretrained-config fields
(``first_conv``, ``classifier``, ``pool_size``, ``input_size``), ``num_features`` and
``head_hidden_size``, ``num_classes=0`` and ``global_pool=''``, ``reset_classifier``,
``forward_features``/``forward_head``/``forward_intermediates`` agreeing with each other
and with ``forward``, ``features_only``, FX graphs (torchvision's feature extraction,
with timm's leaf modules and without) equal to the eager model forward and backward,
``torch.jit.trace`` and ``torch.export``; ``torch.jit.script`` is refused by name.

Cost: the configuration checks build every registered name on the meta device; what
runs the network uses each family's small arch (``family_archs.SMALL_ARCH``) once per
distinct set of options: a timm name differs from its family's others only by ``arch``
(widths and depths), except Conv2Former's 22k model (7x7 kernels), so every name's
modules and options run. The whole file takes well under a minute on one thread.
"""
import math

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._features import FeatureGetterNet
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import mmhybrid.timm_models as tm
from mmhybrid.models import kernels, layers
from mmhybrid.registry import MODELS

from family_archs import SMALL_ARCH, randomize

NAMES = list(tm.VARIANTS)
#: timm's tracer options in its model tests: its leaf modules and functions, constant parameter shapes
TIMM_TRACER = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                   param_shapes_constant=True)


def _options(name: str) -> tuple:
    family, spec = tm.VARIANTS[name]
    return family.backbone, tuple(sorted((k, v) for k, v in spec.items() if k != 'arch'))


#: one name per family and set of options besides ``arch``, smallest variant first
CASES = list({_options(name): name for name in reversed(NAMES)}.values())[::-1]


def small(name: str, **kwargs) -> tm.HybridTimmModel:
    """``name``'s model (its options, its family's classifier) on the family's small arch, random weights
    far from their init (so every part shows in the outputs)."""
    family, spec = tm.VARIANTS[name]
    options = {k: v for k, v in spec.items() if k != 'arch'}
    model = tm.HybridTimmModel(family, MODELS.get(family.backbone), arch=SMALL_ARCH[family.backbone],
                               **{**options, **kwargs})
    randomize(model)
    return model.eval()


def flat(out) -> list:
    """Every tensor of a (possibly nested) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for item in out if item is not None for t in flat(item)]


def flat_classifier(classifier) -> tuple:
    """``get_classifier()`` as a tuple (Conformer has two Linears)."""
    return classifier if isinstance(classifier, tuple) else (classifier, )


def assert_same(a, b, exact: bool = True) -> None:
    """Equal tensors (bit for bit, or up to float rounding), walking tuples, lists and dicts."""
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        if exact:
            assert torch.equal(u, v)
        else:
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5 * max(1.0, v.abs().max().item()))


def test_every_registered_name_is_run_through_one_case():
    assert {_options(name) for name in NAMES} == {_options(name) for name in CASES}
    assert {tm.VARIANTS[name][0].backbone for name in CASES} == set(SMALL_ARCH)


# --------------------------------------------------------------------------------------
# Configuration: every registered name (meta device)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', NAMES)
def test_pretrained_cfg_names_real_layers_and_the_feature_sizes(name):
    family, spec = tm.VARIANTS[name]
    with torch.device('meta'):
        model = timm.create_model(name)
        reference = MODELS.get(family.backbone)(**spec)
    cfg, state = model.pretrained_cfg, model.state_dict()
    modules = dict(model.named_modules())
    assert cfg['architecture'] == name and cfg['input_size'] == (3, 224, 224)
    assert cfg['num_classes'] == model.num_classes == 1000
    first_conv = (cfg['first_conv'], ) if isinstance(cfg['first_conv'], str) else cfg['first_conv']
    assert first_conv and all(isinstance(modules[n], nn.Conv2d) and modules[n].in_channels == 3 for n in first_conv)
    assert all(f'{n}.weight' in state for n in first_conv)
    # every convolution that reads the image is named (CrossFormer's embedding has four)
    image_convs = {f'backbone.{n}' for n, m in reference.named_modules()
                   if isinstance(m, nn.Conv2d) and m.in_channels == 3}
    assert set(first_conv) == image_convs
    classifier = (cfg['classifier'], ) if isinstance(cfg['classifier'], str) else cfg['classifier']
    assert [modules[n] for n in classifier] == list(flat_classifier(model.get_classifier()))
    assert all(isinstance(modules[n], nn.Linear) and modules[n].out_features == 1000 for n in classifier)
    # pool_size: the map the classifier reads at input_size (CvT's ends at stride 16)
    stride = reference.stage_strides[getattr(reference, 'num_official_stages', len(reference.stage_strides)) - 1]
    assert cfg['pool_size'] == (math.ceil(224 / stride), ) * 2
    assert model.num_features > 0 and model.head_hidden_size > 0
    assert timm.data.resolve_data_config({}, model=model)['crop_pct'] == cfg['crop_pct']


@pytest.mark.parametrize('name', NAMES)
def test_num_classes_global_pool_and_features_only_arguments_build(name):
    with torch.device('meta'):
        unpooled = timm.create_model(name, num_classes=0, global_pool='')
        features = timm.create_model(name, features_only=True)
    assert unpooled.num_classes == 0 and unpooled.head.pool_type == ''
    assert all(isinstance(m, nn.Identity) for m in flat_classifier(unpooled.get_classifier()))
    # timm's feature models have at least 3 levels; ours: the 4 stride levels (CvT: its 3 official stages)
    levels = 3 if tm.VARIANTS[name][0].backbone == 'CvT' else 4
    assert len(features.feature_info) == levels
    assert features.feature_info.channels() == [i['num_chs'] for i in unpooled.feature_info]


def test_pooling_requests_a_classifier_cannot_serve_are_refused_by_name():
    with torch.device('meta'):
        with pytest.raises(ValueError, match=r"global_pool='' \(no pooling\) needs num_classes=0"):
            timm.create_model('crossformer_t', num_classes=10, global_pool='')
        with pytest.raises(ValueError, match="pool by average only.*got 'max'"):
            timm.create_model('cvt_13', global_pool='max')
        model = timm.create_model('conformer_t_p16', num_classes=0, global_pool='')
    with pytest.raises(ValueError, match='needs num_classes=0'):
        model.reset_classifier(5)          # still unpooled
    model.reset_classifier(5, 'avg')
    assert [fc.out_features for fc in model.get_classifier()] == [5, 5]


# --------------------------------------------------------------------------------------
# Behaviour: each distinct model, small arch
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', CASES)
def test_training_step_gives_42_logits_and_reaches_every_parameter(name):
    model = small(name, num_classes=42).train()
    logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 42) and not logits.isnan().any()
    logits.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize('name', CASES)
def test_forward_features_head_and_intermediates_agree(name):
    model = small(name, num_classes=5)
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        final, maps = model.forward_intermediates(x)
        only = model.forward_intermediates(x, intermediates_only=True)
        pre = model.forward_head(features, pre_logits=True)
        assert_same(model.forward_head(features), logits)
        assert_same(model.forward_head(final), logits)     # timm: forward_head(forward_intermediates(x)[0])
    assert_same(final, features)
    assert_same(maps, only)
    assert logits.shape == (2, 5) and pre.shape == (2, model.head_hidden_size)
    info = model.feature_info
    assert [m.shape[1] for m in maps] == [i['num_chs'] for i in info]
    assert [m.shape[-2:] for m in maps] == [(math.ceil(70 / i['reduction']), math.ceil(90 / i['reduction']))
                                           for i in info]
    if model.head.reads_tokens:   # timm's non-standard models: (last map, class token)
        assert isinstance(features, tuple) and torch.equal(features[0], maps[-1])
        assert features[1].dim() == 2
    else:                         # standard: the unpooled last map, num_features channels
        assert torch.equal(features, maps[-1]) and features.shape[1] == model.num_features
    # timm's features_only wrapper (what create_model(..., features_only=True) builds) over the same weights
    getter = FeatureGetterNet(small(name, num_classes=5), out_indices=tuple(range(len(info))))
    getter.model.load_state_dict(model.state_dict())   # the pruned head is None: its keys are ignored
    with torch.no_grad():
        assert_same(getter(x), maps)


@pytest.mark.parametrize('name', CASES)
def test_reset_classifier_and_global_pool_give_pooled_then_unpooled_features(name):
    model = small(name, num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        model.reset_classifier(0)
        pooled = model(x)
        model.reset_classifier(0, '')
        unpooled = model(x)
    assert model.num_classes == 0
    assert_same(pooled, pre)
    assert pooled.shape == (1, model.head_hidden_size)
    # timm's non-standard-model rule: a model built with num_classes=0 gives num_features wide features
    if model.head.reads_tokens:
        assert pooled.shape[1] == model.num_features
        last_map, token = unpooled     # the map and the normalised class token, unpooled
        assert torch.equal(last_map, features[0]) and token.dim() == 2
    else:                              # the map after the head's norm (Conv2Former: its 1x1 conv too)
        assert unpooled.dim() == 4 and unpooled.shape[-2:] == features.shape[-2:]
        assert unpooled.shape[1] == model.head_hidden_size
        torch.testing.assert_close(unpooled.mean((2, 3)), pooled)
    with pytest.raises(ValueError, match='needs num_classes=0'):
        model.reset_classifier(3)          # still unpooled: a Linear needs pooled features
    model.reset_classifier(3, 'avg')
    with torch.no_grad():
        assert model(x).shape == (1, 3) and model.head.pool_type == 'avg'
    built = small(name, num_classes=0, global_pool='')
    built.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert_same(built(x), unpooled)


# --------------------------------------------------------------------------------------
# FX, trace, export, TorchScript
# --------------------------------------------------------------------------------------
def _output_nodes(model: nn.Module) -> list:
    """The graph nodes of the maps a bare backbone returns (every family returns them through
    ``autocast_output``)."""
    _, eval_nodes = get_graph_node_names(model)
    return [n for n in eval_nodes if n.split('.')[-1].startswith('autocast_output')]


@pytest.mark.parametrize('tracer', ['timm', 'torchvision'])
@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_fx_feature_extraction_of_every_backbone_equals_eager_at_any_size(family, tracer):
    """timm's feature extractor (torchvision's, with timm's leaf modules and functions) and torchvision's
    plain one give the backbone's maps; the shape-dependent code runs in the graph, so one graph serves
    every input size."""
    backbone = randomize(MODELS.get(family)(arch=SMALL_ARCH[family], drop_path_rate=0.0)).eval()
    nodes = _output_nodes(backbone)
    assert len(nodes) == len(backbone.out_indices)
    extract = timm.layers.create_feature_extractor if tracer == 'timm' else create_feature_extractor
    extractor = extract(backbone, nodes).eval()
    for shape in ((2, 3, 70, 90), (1, 3, 64, 64)):
        x = torch.randn(shape)
        with torch.no_grad():
            assert_same(list(extractor(x).values()), backbone(x))
    # the input check runs in the graph too
    with pytest.raises(ValueError, match='expects 3 input channels'):
        torch.fx.symbolic_trace(backbone)(torch.randn(1, 4, 32, 32))


#: helpers of layers.py / kernels.py that each family calls from its own module: every call site must be a
#: leaf of a traced graph (their shape-dependent Python and per-call decisions run when the graph runs)
SHARED_LEAVES = {
    'CloFormer': (kernels.conv_act, kernels.depthwise_conv),
    'Conformer': (layers.pad_bottom_right, kernels.attention, kernels.depthwise_conv),
    'Conv2Former': (layers.pad_bottom_right, ),
    'CrossFormer': (layers.pad_bottom_right, ),
    'CrossFormerPP': (layers.pad_bottom_right, kernels.depthwise_conv),
    'CvT': (layers.pad_bottom_right, kernels.attention, kernels.depthwise_conv),
}


@pytest.mark.parametrize('family', list(SMALL_ARCH))
def test_shared_helpers_are_leaves_of_the_traced_graph_of_every_family(family):
    """``fx_leaf`` declares a helper a leaf once, where it is defined: a family module that imports it
    declares nothing, and ``torch.fx.symbolic_trace`` still records one call node per call."""
    backbone = MODELS.get(family)(arch=SMALL_ARCH[family]).eval()
    targets = {n.target for n in torch.fx.symbolic_trace(backbone).graph.nodes if n.op == 'call_function'}
    for helper in SHARED_LEAVES[family] + (layers.autocast_output, ):
        assert helper in targets, f'{helper.__name__} is not a leaf of the {family} graph'


def test_a_shared_helper_is_a_leaf_in_code_that_never_declared_it():
    """Traced from this test module: the call is one node, the padding runs when the graph runs (any size),
    and tracing the graph module again keeps the node."""
    def pad_then_double(x):
        return layers.pad_bottom_right(x, 4, 4) * 2

    graph_module = torch.fx.symbolic_trace(pad_then_double)
    calls = [n.target for n in graph_module.graph.nodes if n.op == 'call_function']
    assert calls[0] is layers.pad_bottom_right
    for shape, padded in (((1, 2, 5, 6), (8, 8)), ((1, 2, 9, 4), (12, 4))):
        x = torch.randn(shape)
        assert torch.equal(graph_module(x), pad_then_double(x)) and graph_module(x).shape[-2:] == padded
    again = torch.fx.symbolic_trace(graph_module)
    assert layers.pad_bottom_right in {n.target for n in again.graph.nodes if n.op == 'call_function'}


def _fx_model(model: nn.Module, tracer_kwargs: dict) -> nn.Module:
    """timm's FX test model: the last graph node of each mode, through torchvision's feature extraction."""
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=train_nodes[-1:], eval_return_nodes=eval_nodes[-1:],
                                    tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('tracer', ['timm', 'torchvision'])
@pytest.mark.parametrize('name', CASES)
def test_fx_classifier_equals_eager_forward_and_backward(name, tracer):
    kwargs = TIMM_TRACER if tracer == 'timm' else {}
    model = small(name, num_classes=42)
    x = torch.randn(2, 3, 70, 90)
    with torch.inference_mode():   # eager inference takes the fused CPU paths; the graph chooses them too
        eager = model(x)
        fx_model = _fx_model(model, kwargs).eval()
        assert torch.equal(next(iter(fx_model(x).values())), eager)
        assert torch.equal(next(iter(fx_model(x[:1, :, :64, :64]).values())), model(x[:1, :, :64, :64]))
    fx_model.train()
    model.train()
    fx_out = next(iter(fx_model(x).values()))
    eager = model(x)
    assert_same(fx_out, eager, exact=False)
    fx_out.square().mean().backward()
    eager.square().mean().backward()
    fx_grads = dict(fx_model.named_parameters())
    assert sum(p.numel() for p in fx_grads.values()) == sum(p.numel() for p in model.parameters())
    for n, p in model.named_parameters():
        assert fx_grads[n].grad is not None, n
        torch.testing.assert_close(fx_grads[n].grad, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', [n for n in CASES if n != 'conv2former_b_22k'])
def test_jit_trace_and_export_of_the_classifier_give_the_eager_logits(name):
    """Both record one input size (the backbones' own trace/export checks: test_backbone_base.py)."""
    model = small(name, num_classes=7)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        eager = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        assert_same(traced(x), eager, exact=False)
        exported = torch.export.export(model, (x, ), strict=False)
        assert_same(exported.module()(x), eager, exact=False)


@pytest.mark.parametrize('family', ['CrossFormer', 'CvT'])
def test_torchscript_is_refused_with_a_clear_message(family):
    name = next(n for n in CASES if tm.VARIANTS[n][0].backbone == family)
    model = small(name, num_classes=3)
    with pytest.raises(RuntimeError, match=r'do not support torch\.jit\.script.*torch\.jit\.trace'):
        torch.jit.script(model)
    with pytest.raises(RuntimeError, match=r'do not support torch\.jit\.script'):
        torch.jit.script(model.backbone)
