"""timm interop: every registered name builds in timm, matches the OpenMMLab backbone,
and loads official weights exactly as OpenMMLab does.

A family whose backbone is not in ``mmhybrid.registry.MODELS`` yet is reported by name
as an expected failure. timm's own model conventions (FX, pretrained_cfg fields, pooling
arguments, ...) are checked in ``test_timm_conventions.py``.
"""
import dataclasses
import importlib.util
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import mmhybrid.timm_models as tm
from mmhybrid.checkpoints import CheckpointMismatchError
from mmhybrid.registry import MODELS

from family_archs import OLD_LAYOUT_FAMILIES, SMALL_ARCH, official_head, official_state, old_layout_state, randomize

REFERENCE_DIR = Path(__file__).parent / 'reference'
FAMILY = {f.backbone: f for f in tm.FAMILIES}
NAMES = list(tm.VARIANTS)


def backbone_class(family_name: str, what: str = ''):
    cls = MODELS.get(family_name)
    if cls is None:
        pytest.xfail(f'{family_name} is not registered in mmhybrid yet{what}')
    return cls


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def official_logits(family_name: str, sd: dict, features) -> torch.Tensor:
    """The official classifiers, written out by hand from the official forward code.

    ``features``: the last stage map, or for Conformer and CvT ``(last map, class token)``.
    """
    if family_name == 'Conformer':  # pooling -> conv_cls_head; trans_norm -> [:, 0] -> trans_cls_head; sum
        last_map, cls = features
        conv = F.linear(last_map.mean((2, 3)), sd['conv_cls_head.weight'], sd['conv_cls_head.bias'])
        token = F.layer_norm(cls, cls.shape[-1:], sd['trans_norm.weight'], sd['trans_norm.bias'], 1e-5)
        return conv + F.linear(token, sd['trans_cls_head.weight'], sd['trans_cls_head.bias'])
    if family_name == 'CvT':  # norm (eps 1e-5) on the class token -> head; without one: mean of normed tokens
        last_map, cls = features
        if cls is None:
            tokens = last_map.flatten(2).transpose(1, 2)
            x = F.layer_norm(tokens, tokens.shape[-1:], sd['norm.weight'], sd['norm.bias'], 1e-5).mean(1)
        else:
            x = F.layer_norm(cls, cls.shape[-1:], sd['norm.weight'], sd['norm.bias'], 1e-5)
        return F.linear(x, sd['head.weight'], sd['head.bias'])
    last_map = features
    if family_name == 'CloFormer':  # norm (GroupNorm(1, C), eps 1e-5) -> AdaptiveAvgPool2d(1) -> head
        y = F.group_norm(last_map, 1, sd['norm.weight'], sd['norm.bias'], 1e-5)
        return F.linear(y.mean((2, 3)), sd['head.weight'], sd['head.bias'])
    if family_name in ('CrossFormer', 'CrossFormerPP'):  # norm over tokens -> AdaptiveAvgPool1d -> head
        tokens = last_map.flatten(2).transpose(1, 2)
        tokens = F.layer_norm(tokens, tokens.shape[-1:], sd['norm.weight'], sd['norm.bias'], 1e-5)
        return F.linear(tokens.mean(1), sd['head.weight'], sd['head.bias'])
    if family_name == 'Conv2Former':  # head = conv1x1, GELU, channels-first LN (eps 1e-6); mean; pred
        y = F.gelu(F.conv2d(last_map, sd['head.0.weight'], sd['head.0.bias']))
        u = y.mean(1, keepdim=True)
        y = (y - u) / torch.sqrt((y - u).pow(2).mean(1, keepdim=True) + 1e-6)
        y = sd['head.2.weight'][:, None, None] * y + sd['head.2.bias'][:, None, None]
        return F.linear(y.mean((-2, -1)), sd['pred.weight'], sd['pred.bias'])
    raise KeyError(f'no hand-written official classifier for {family_name}')


def tiny(family_name: str, **kwargs) -> tm.HybridTimmModel:
    return tm.HybridTimmModel(FAMILY[family_name], MODELS.get(family_name), arch=SMALL_ARCH[family_name], **kwargs).eval()


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------
def test_every_family_registers_its_variants_in_timm_under_their_own_names():
    assert set(FAMILY) == {'CrossFormer', 'CrossFormerPP', 'Conv2Former', 'Conformer', 'CvT', 'CloFormer'}
    expected = [name for family in tm.FAMILIES for name in family.variants]
    # with the pinned timm no name needed the mmhybrid_ prefix: timm has none of them
    assert sorted(tm.VARIANTS) == sorted(expected)
    assert sorted(timm.list_models(module='timm_models')) == sorted(expected)
    assert all(timm.models.model_entrypoint(n).__module__ == 'mmhybrid.timm_models' for n in expected)
    assert tm.list_models() == NAMES
    assert set(tm.list_models(available_only=True)) == {
        n for n, (family, _) in tm.VARIANTS.items() if MODELS.get(family.backbone) is not None}


def test_a_name_timm_already_has_is_never_replaced():
    with pytest.warns(UserWarning, match="'mmhybrid_resnet18' instead"):
        assert tm.registered_name('resnet18') == 'mmhybrid_resnet18'
    assert timm.models.model_entrypoint('resnet18').__module__ == 'timm.models.resnet'
    assert tm.registered_name('crossformer_s') == 'crossformer_s'  # our own: kept


def test_import_mmhybrid_leaves_timm_to_the_submodule():
    code = ('import sys, mmhybrid; before = "timm" in sys.modules; import mmhybrid.timm_models, timm; '
            'print(before, "crossformer_s" in timm.list_models())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'True']


# --------------------------------------------------------------------------------------
# Every name, with and without features_only (meta device: structure only)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', NAMES)
def test_every_variant_builds_with_and_without_features_only_like_the_openmmlab_backbone(name):
    family, spec = tm.VARIANTS[name]
    cls = backbone_class(family.backbone, f' ({name})')
    with torch.device('meta'):
        reference = cls(**spec)
        model = timm.create_model(name)
        features = timm.create_model(name, features_only=True)
    channels, strides = list(reference.stage_channels), list(reference.stage_strides)
    assert features.feature_info.channels() == channels
    assert features.feature_info.reduction() == strides
    assert [i['num_chs'] for i in model.feature_info] == channels
    assert [i['reduction'] for i in model.feature_info] == strides
    # every stage is a module of the model, named in feature_info
    assert [model.get_submodule(i['module']) for i in model.feature_info] == model.backbone.stage_modules()
    assert features.feature_info.module_name() == [i['module'] for i in model.feature_info]
    assert n_params(features) == n_params(model.backbone) == n_params(reference)
    assert model.pretrained_cfg['architecture'] == name
    if family.head is None:
        assert model.head is None and model.num_classes == 0
    else:
        classifier = [f'head.{n}' for n in family.head.classifier_names]
        assert model.num_classes == 1000 and model.pretrained_cfg['classifier'] in (classifier[0], tuple(classifier))
        if name in family.params:  # the published count, official classifier included
            assert round(n_params(model) / 1e6, 1) == family.params[name]


# --------------------------------------------------------------------------------------
# Official weights: the timm path and the OpenMMLab path agree (and match the fixtures)
# --------------------------------------------------------------------------------------
def _load_synth_weights():
    spec = importlib.util.spec_from_file_location('synth_weights', REFERENCE_DIR / 'synth_weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_fixture_per_family():
    """Per family, the named-arch fixture with the smallest input."""
    synth, best = _load_synth_weights(), {}
    for path in sorted(REFERENCE_DIR.glob('*/*.pt')):
        fx = synth.load_fixture(path)
        if isinstance(fx['project_arch'].get('arch'), str):
            size = fx['input'].numel()
            if path.parent.name not in best or size < best[path.parent.name][0]:
                best[path.parent.name] = (size, path)
    return [path for _, path in best.values()]


def _variant_for(cls, family_name: str, project_arch: dict):
    """The timm name of a fixture's arch (through the family's aliases) and the other options."""
    aliases = getattr(cls, 'arch_aliases', {})
    arch = aliases.get(project_arch['arch'].lower(), project_arch['arch'].lower())
    for name, (family, spec) in tm.VARIANTS.items():
        if family.backbone == family_name and aliases.get(spec['arch'], spec['arch']) == arch and len(spec) == 1:
            return name, {k: v for k, v in project_arch.items() if k != 'arch'}
    raise AssertionError(f'no timm name for {family_name} arch {project_arch["arch"]!r}')


FIXTURES = _one_fixture_per_family()


@pytest.mark.parametrize('path', FIXTURES, ids=[p.stem for p in FIXTURES])
def test_official_weights_give_the_official_outputs_through_timm_as_through_openmmlab(path, tmp_path):
    """One official checkpoint, three readers: OpenMMLab's init_cfg loader, timm's
    features_only model (from the file) and timm's classifier (from the state dict in
    memory) all hold the same weights; the timm
    features reproduce the official outputs and the logits equal the official
    classifier written out by hand."""
    synth = _load_synth_weights()
    fx = synth.load_fixture(path)
    family = next((f for f in tm.FAMILIES if MODELS.get(f.backbone).key == fx['family']), None)
    assert family is not None, f'{fx["case"]}: family {fx["family"]!r} has no timm entry (mmhybrid/timm_models.py)'
    cls = backbone_class(family.backbone, f' (fixture {fx["case"]})')
    name, options = _variant_for(cls, family.backbone, fx['project_arch'])
    openmmlab = MODELS.build(dict(type=f'mmhybrid.{family.backbone}', **fx['project_arch'], drop_path_rate=0.0))
    official = synth.synth_state_dict(fx['keys'])
    if family.head is not None:  # a classification file (the dense fixtures may lack the head)
        official = {**official_head(family.backbone, openmmlab), **official}
    file = str(tmp_path / 'official.pth')
    torch.save({'model': official}, file)

    openmmlab.load_pretrained(file)  # what init_cfg=dict(type='Pretrained', checkpoint=file) runs
    features = timm.create_model(name, features_only=True, out_indices=(-3, -1), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=file), **options).eval()
    same = features.model.backbone.state_dict()
    assert same.keys() == openmmlab.state_dict().keys()
    assert all(torch.equal(v, same[k]) for k, v in openmmlab.state_dict().items())

    n = len(openmmlab.stage_channels)
    assert features.feature_info.channels() == [openmmlab.stage_channels[i] for i in (n - 3, n - 1)]
    with torch.no_grad():
        maps = features.model.forward_intermediates(fx['input'].float(), intermediates_only=True)
    for diff, ref in zip(synth.compare(maps, fx['outputs']), fx['outputs']):
        assert diff <= 1e-4 * ref['absmax']

    if family.head is not None:  # timm's other route: an in-memory state dict
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=official),
                                  **options).eval()
        own = model.state_dict()
        assert all(torch.equal(own[f'backbone.{k}'], v) for k, v in same.items())
        filled = set()
        for official_key, ours in family.head_keys.items():
            for param in ('weight', 'bias'):
                if f'{official_key}.{param}' in official:
                    assert torch.equal(own[f'head.{ours}.{param}'], official[f'{official_key}.{param}'])
                    filled.add(f'{ours}.{param}')
        assert filled == set(model.head.state_dict())
        with torch.no_grad():
            feats = model.forward_features(fx['input'].float())
            logits = model.forward_head(feats)
            assert torch.equal(model(fx['input'].float()), logits)
        # the last map is the verified maps[-1]; the class token comes out of the same blocks
        torch.testing.assert_close(feats[0] if isinstance(feats, tuple) else feats, maps[-1], rtol=0, atol=0)
        expected = official_logits(family.backbone, official, feats)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


# --------------------------------------------------------------------------------------
# Loading rules (tiny archs)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('family_name', list(SMALL_ARCH))
def test_the_head_comes_from_the_same_container_as_the_backbone(family_name, tmp_path):
    model = tiny(family_name)
    a, b = official_state(family_name, model.backbone, seed=1), official_state(family_name, model.backbone, seed=2)
    torch.save({'state_dict': a, 'state_dict_ema': b}, tmp_path / 'both.pth')
    model.load_pretrained(str(tmp_path / 'both.pth'))
    chosen = b if family_name == 'Conv2Former' else a  # Conv2Former files: the EMA weights are the published ones
    reference = MODELS.build(dict(type=f'mmhybrid.{family_name}', arch=SMALL_ARCH[family_name],
                                  init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'both.pth'))))
    reference.init_weights()
    own = model.state_dict()
    assert all(torch.equal(own[f'backbone.{k}'], v) for k, v in reference.state_dict().items())
    official_key, ours = next(iter(FAMILY[family_name].head_keys.items()))
    assert torch.equal(own[f'head.{ours}.weight'], chosen[f'{official_key}.weight'])


def test_a_classifier_for_other_classes_keeps_its_init_and_the_rest_loads(tmp_path, caplog):
    model = tiny('Conv2Former', num_classes=10)
    init_fc = model.head.fc.weight.detach().clone()
    official = official_state('Conv2Former', model.backbone)
    torch.save({'state_dict': official}, tmp_path / 'in1k.pth')
    with caplog.at_level(logging.INFO, logger='mmhybrid.timm_models'):
        model.load_pretrained(str(tmp_path / 'in1k.pth'))
    assert '1000 classes, this model 10' in caplog.text
    assert torch.equal(model.head.fc.weight, init_fc)
    assert torch.equal(model.head.conv.weight, official['head.0.weight'])
    assert torch.equal(model.head.norm.bias, official['head.2.bias'])


def test_a_detector_checkpoint_loads_the_backbone_and_warns_about_the_classifier(tmp_path, caplog):
    model = tiny('CrossFormer')
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    backbone = official_state('CrossFormer', model.backbone)
    detector = {f'backbone.{k}': v for k, v in backbone.items() if not k.startswith(('norm.', 'head.'))}
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': detector, 'meta': {}}, tmp_path / 'retinanet.pth')
    with caplog.at_level(logging.WARNING, logger='mmhybrid.timm_models'):
        model.load_pretrained(str(tmp_path / 'retinanet.pth'))
    assert 'no CrossFormer classifier weights for head.norm.weight' in caplog.text
    assert torch.equal(model.backbone.patch_embed.projs[0].weight, backbone['patch_embed.projs.0.weight'])
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head_before.items())


def test_load_state_dict_accepts_official_and_own_formats_and_openmmlab_accepts_timm_files(tmp_path):
    model = tiny('CrossFormer')
    official = official_state('CrossFormer', model.backbone)
    model.load_state_dict(official)  # official names: converted by the pre-hook
    assert torch.equal(model.head.fc.weight, official['head.weight'])
    again = tiny('CrossFormer')
    again.load_state_dict(model.state_dict())  # own names: loaded as they are
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert model.convert_checkpoint(model.state_dict()).keys() == model.state_dict().keys()  # idempotent
    fresh = tiny('CrossFormer')
    torch.save({'model': official}, tmp_path / 'official.pth')
    timm.models.load_checkpoint(fresh, str(tmp_path / 'official.pth'))  # create_model(checkpoint_path=...)
    assert torch.equal(fresh.backbone.layers[3].blocks[0].mlp.fc2.weight, official['layers.3.blocks.0.mlp.fc2.weight'])
    torch.save(model.state_dict(), tmp_path / 'timm.pth')  # a timm-trained file back in OpenMMLab
    reference = MODELS.build(dict(type='mmhybrid.CrossFormer', arch=SMALL_ARCH['CrossFormer'],
                                  init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'timm.pth'))))
    reference.init_weights()
    assert all(torch.equal(v, official[k]) for k, v in reference.state_dict().items())


@pytest.mark.parametrize('family_name,name', [('Conformer', 'conformer_t_p16'), ('Conv2Former', 'conv2former_n')])
def test_timm_state_dicts_of_the_earlier_backbone_layout_still_load(family_name, name):
    """A timm-format state dict saved before the stages became modules (``backbone.*`` under the
    official names) loads strictly into the classifier and into the features_only wrapper."""
    assert family_name in OLD_LAYOUT_FAMILIES
    source = tiny(family_name, num_classes=5)
    randomize(source.backbone)
    old = {f'backbone.{k}': v for k, v in old_layout_state(source.backbone).items()}
    old.update({f'head.{k}': torch.randn_like(v) for k, v in source.head.state_dict().items()})
    source.head.load_state_dict({k[5:]: v for k, v in old.items() if k.startswith('head.')})
    model = tiny(family_name, num_classes=5)
    model.load_state_dict(old)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))

    features = timm.create_model(name, features_only=True)
    old = {f'backbone.{k}': v for k, v in old_layout_state(features.model.backbone).items()}
    fresh = timm.create_model(name, features_only=True)   # other random weights
    assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(), features.parameters()))
    fresh.load_state_dict(old)
    assert all(torch.equal(v, features.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    model = tiny('CrossFormer')
    other = official_state('CrossFormer', model.backbone)
    other['layers.0.blocks.0.attn.qkv.weight'] = torch.zeros(3, 3)
    torch.save({'model': other}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointMismatchError, match=r'layers\.0\.blocks\.0\.attn\.qkv\.weight'):
        model.load_pretrained(str(tmp_path / 'other.pth'))


# --------------------------------------------------------------------------------------
# The timm model interface
# --------------------------------------------------------------------------------------
def test_timm_model_interface_on_a_classifier():
    model = tiny('Conv2Former', num_classes=7)
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        logits = model(x)
        final, maps = model.forward_intermediates(x)
        last = model.forward_features(x)
        pooled = model.forward_head(last, pre_logits=True)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert last.shape == (1, 64, 3, 4) and model.num_features == 64
    assert [m.shape[-2:] for m in maps] == [(math.ceil(65 / s), math.ceil(97 / s)) for s in (4, 8, 16, 32)]
    assert pooled.shape == (1, model.head_hidden_size) == (1, 1280)
    assert torch.equal(logits, model.get_classifier()(pooled))
    assert torch.equal(final, last) and [m.shape[1] for m in maps] == [16, 32, 48, 64]
    assert [m.shape[1] for m in only] == [48, 64]
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (1, 1280) and model.num_classes == 0
    model.set_grad_checkpointing()
    assert model.backbone.with_cp
    with pytest.raises(ValueError, match='NCHW'):
        model.forward_intermediates(x, output_fmt='NHWC')
    with pytest.raises(ValueError, match='average only'):
        model.reset_classifier(3, global_pool='max')


def test_conformer_classifier_sums_the_two_official_heads_and_gives_each():
    """The official model returns [conv_cls, trans_cls], trains each with half the loss and
    reports the accuracy of their sum: forward gives the sum, head.forward_heads both."""
    model = tiny('Conformer', num_classes=7)
    official = official_state('Conformer', model.backbone, num_classes=7)
    model.load_state_dict(official)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        last_map, cls = model.forward_features(x)
        *maps, (_, token) = model.backbone(x)
        conv_cls, trans_cls = model.head.forward_heads((last_map, cls))
        logits = model(x)
        pooled = model.forward_head((last_map, cls), pre_logits=True)
    assert torch.equal(cls, token) and torch.equal(last_map, maps[-1])
    torch.testing.assert_close(conv_cls, F.linear(last_map.mean((2, 3)), official['conv_cls_head.weight'],
                                                  official['conv_cls_head.bias']))
    torch.testing.assert_close(logits, conv_cls + trans_cls, rtol=0, atol=0)
    torch.testing.assert_close(logits, official_logits('Conformer', official, (last_map, cls)))
    assert pooled.shape == (2, 64 + 32) == (2, model.head_hidden_size)
    assert [fc.out_features for fc in model.get_classifier()] == [7, 7]
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
    model.reset_classifier(3)
    assert [fc.out_features for fc in model.get_classifier()] == [3, 3] and model(x).shape == (2, 3)


def test_conformer_mmpretrain_file_fills_trans_norm_and_both_heads(tmp_path):
    from test_conformer import mmpretrain_state
    model = tiny('Conformer', num_classes=10)
    ckpt = mmpretrain_state(model.backbone)   # backbone.trans_norm.*, head.{conv,trans}_cls_head.*
    torch.save(ckpt, tmp_path / 'mmpretrain.pth')
    model.load_pretrained(str(tmp_path / 'mmpretrain.pth'))
    state = ckpt['state_dict']
    assert torch.equal(model.head.trans_norm.weight, state['backbone.trans_norm.weight'])
    assert torch.equal(model.head.conv_cls_head.weight, state['head.conv_cls_head.weight'])
    assert torch.equal(model.head.trans_cls_head.weight, state['head.trans_cls_head.weight'])


def test_cvt_huggingface_file_fills_the_classifier_and_gives_the_official_logits(tmp_path):
    from test_cvt import huggingface_names, official_state as cvt_official_state
    model = tiny('CvT')
    official = cvt_official_state(model.backbone)
    torch.save(huggingface_names(official), tmp_path / 'hf.bin')
    model.load_pretrained(str(tmp_path / 'hf.bin'))
    assert torch.equal(model.head.fc.weight, official['head.weight'])
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    torch.testing.assert_close(logits, official_logits('CvT', official, feats))


def test_cvt_without_class_token_classifies_the_mean_of_the_normalised_tokens():
    model = tm.HybridTimmModel(FAMILY['CvT'], MODELS.get('CvT'), arch=dict(SMALL_ARCH['CvT'], cls_token=False)).eval()
    official = {'norm.weight': torch.rand(48) + 0.5, 'norm.bias': torch.randn(48),
                'head.weight': torch.randn(1000, 48), 'head.bias': torch.randn(1000)}
    model.head.load_state_dict({'norm.weight': official['norm.weight'], 'norm.bias': official['norm.bias'],
                                'fc.weight': official['head.weight'], 'fc.bias': official['head.bias']})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last_map, cls = model.forward_features(x)
        logits = model(x)
    assert cls is None
    torch.testing.assert_close(logits, official_logits('CvT', official, (last_map, None)))


def test_cvt_stride_32_level_is_for_features_only():
    with pytest.raises(ValueError, match='extra_stage=True adds a stride-32 level for dense heads only'):
        timm.create_model('cvt_13', extra_stage=True)
    with torch.device('meta'):
        features = timm.create_model('cvt_13', features_only=True, extra_stage=True)
    assert features.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize('name', ['crossformer_t', 'crossformer_pp_s', 'conv2former_n', 'conformer_t_p16', 'cvt_13',
                                  'cloformer_xxs'])
def test_features_only_runs_the_stages_up_to_the_last_out_index_only(name, stages_that_run):
    features = timm.create_model(name, features_only=True, out_indices=(0, 1)).eval()
    family, spec = tm.VARIANTS[name]
    full = MODELS.get(family.backbone)(**spec, drop_path_rate=0.0).eval()
    full.load_state_dict(features.model.backbone.state_dict())  # the later stages keep their weights
    ran = stages_that_run(features.model.backbone)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps, first_two = full(x), features(x)
    assert ran == {0, 1} and features.model.head is None
    for a, b in zip(maps[:2], first_two):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    with pytest.raises(ValueError, match=r'pruned to stages 0\.\.1'):
        features.model.forward_intermediates(x, indices=(2, ))


def test_data_config_and_drop_path_follow_timm_conventions():
    for name, mean, crop in (('crossformer_t', (0.485, 0.456, 0.406), 0.875), ('conv2former_n', (0.5, 0.5, 0.5), 0.9)):
        with torch.device('meta'):
            model = timm.create_model(name, drop_path_rate=0.3)
        cfg = timm.data.resolve_data_config({}, model=model)
        assert cfg['mean'] == mean and cfg['crop_pct'] == crop and cfg['interpolation'] == 'bicubic'
        rates = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
        assert max(rates) == pytest.approx(0.3)
    with torch.device('meta'):
        assert not any(type(m).__name__ == 'DropPath' for m in timm.create_model('crossformer_t').modules())


def test_a_family_without_classifier_returns_the_multiscale_maps():
    family = dataclasses.replace(FAMILY['CrossFormer'], head=None)
    model = tm.HybridTimmModel(family, MODELS.get('CrossFormer'), arch=SMALL_ARCH['CrossFormer'], num_classes=0).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256] and model.num_classes == 0
    with pytest.raises(ValueError, match='no classification head for CrossFormer'):
        tm.HybridTimmModel(family, MODELS.get('CrossFormer'), arch=SMALL_ARCH['CrossFormer'], num_classes=10)


def test_bad_requests_get_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"pretrained_cfg_overlay=dict\(file='PATH'\)"):
        timm.create_model('crossformer_t', pretrained=True)
    with pytest.raises(ValueError, match="fixes arch='small'"):
        timm.create_model('crossformer_s', arch='large')
    with pytest.raises(ValueError, match='out_indices selects the feature maps of features_only=True'):
        timm.create_model('crossformer_t', out_indices=(1, 2))
    with pytest.raises(ValueError, match="feature_cls='getter'"):
        timm.create_model('crossformer_t', features_only=True, feature_cls='hook')
    with pytest.raises(ValueError, match='average only'):
        timm.create_model('crossformer_t', global_pool='max')
    missing = tm.TimmFamily('NoSuchNet', {'nosuchnet_t': 't'})
    monkeypatch.setitem(tm.VARIANTS, 'nosuchnet_t', (missing, dict(arch='t')))
    with pytest.raises(RuntimeError, match="backbone 'NoSuchNet'"):
        tm._create('nosuchnet_t')


# --------------------------------------------------------------------------------------
# The README example (plain PyTorch)
# --------------------------------------------------------------------------------------
README_EXAMPLE = '''
from collections import OrderedDict

import timm
import torch
import torchvision

import mmhybrid.timm_models  # noqa: F401  (registers crossformer_s, conv2former_t, ... in timm)

backbone = timm.create_model('crossformer_s', features_only=True, out_indices=(1, 2, 3), pretrained=True,
                             pretrained_cfg_overlay=dict(file='checkpoints/crossformer-s.pth'))
print(backbone.feature_info.channels(), backbone.feature_info.reduction())  # [192, 384, 768] [8, 16, 32]
fpn = torchvision.ops.FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=256)

images = torch.randn(1, 3, 256, 384)
features = backbone(images)  # list of NCHW maps, strides 8, 16, 32
pyramid = fpn(OrderedDict(zip(['p3', 'p4', 'p5'], features)))
print({k: tuple(v.shape) for k, v in pyramid.items()})  # p3: (1, 256, 32, 48) ... p5: (1, 256, 8, 12)

# the same file as an ImageNet classifier, with the official preprocessing
classifier = timm.create_model('crossformer_s', pretrained=True,
                               pretrained_cfg_overlay=dict(file='checkpoints/crossformer-s.pth')).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=classifier))
'''


def test_readme_example_runs(tmp_path, capsys):
    with torch.device('meta'):
        shapes = MODELS.build(dict(type='mmhybrid.CrossFormer', arch='small'))
    official = {k: torch.randn(v.shape) * 0.02 for k, v in shapes.state_dict().items()}
    official.update(official_head('CrossFormer', shapes))
    torch.save({'model': official}, tmp_path / 'crossformer-s.pth')
    code = README_EXAMPLE.replace('checkpoints/crossformer-s.pth', str(tmp_path / 'crossformer-s.pth'))
    names = {}
    with torch.no_grad():
        exec(compile(code, 'README', 'exec'), names)
    out = capsys.readouterr().out
    assert '[192, 384, 768] [8, 16, 32]' in out and "'p5': (1, 256, 8, 12)" in out
    assert torch.equal(names['classifier'].head.fc.weight, official['head.weight'])
    assert 'Normalize(mean=tensor([0.4850, 0.4560, 0.4060])' in str(names['transform'])


@pytest.mark.parametrize('features_only', [True, False])
def test_create_model_checkpoint_path_reads_official_files_with_and_without_features_only(tmp_path, features_only):
    """timm's checkpoint_path goes through mmhybrid's safe loader and converter, also through the
    features_only wrapper (whose own keys are model.backbone.*)."""
    official = {k: torch.randn_like(v) if v.is_floating_point() else v
                for k, v in MODELS.build(dict(type='mmhybrid.CloFormer', arch='xxs')).state_dict().items()}
    torch.save({'model': official}, tmp_path / 'cloformer-xxs.pth')
    model = timm.create_model('cloformer_xxs', features_only=features_only,
                              checkpoint_path=str(tmp_path / 'cloformer-xxs.pth'))
    backbone = model.model.backbone if features_only else model.backbone
    assert all(torch.equal(v, official[k]) for k, v in backbone.state_dict().items())
