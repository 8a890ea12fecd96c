"""mmhybrid.LayerDecayOptimizerConstructor and the backbones' layer ids."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from mmhybrid.registry import MODELS


class Detector(nn.Module):
    """A backbone plus a head, named as in mmdet/mmseg models."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(8, 2, 1)


def conv2former(**kwargs):
    arch = dict(embed_dims=8, depths=(1, 1, 12, 1), kernel_size=3)
    return MODELS.build(dict(type='mmhybrid.Conv2Former', arch=arch, **kwargs))


def build(model, decay_type='layer_wise', num_layers=6, decay_rate=0.5, **paramwise):
    return build_optim_wrapper(model, dict(
        constructor='mmhybrid.LayerDecayOptimizerConstructor',
        optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
        paramwise_cfg=dict(decay_rate=decay_rate, decay_type=decay_type, num_layers=num_layers, **paramwise)))


def lr_and_wd(wrapper):
    return {name: (g['lr'], g['weight_decay']) for g in wrapper.optimizer.param_groups
            for name in g['param_names']}


def test_layer_wise_ids_follow_convnext_and_spread_stage_2_blocks():
    model = conv2former()
    ids = {n: model.layer_decay_id(n, 6) for n, _ in model.named_parameters()}
    assert {ids[n] for n in ids if n.startswith('stem.')} == {0}
    assert {ids[n] for n in ids if n.startswith('stages.0.')} == {1}
    assert {ids[n] for n in ids if n.startswith('stages.1.')} == {2}   # its downsampling and blocks
    assert {ids[n] for n in ids if n.startswith('stages.2.downsample.')} == {3}
    # 12 blocks over ids 3, 4, 5: four each, in order
    stage2 = [ids[f'stages.2.blocks.{j}.layer_scale_1'] for j in range(12)]
    assert stage2 == [3] * 4 + [4] * 4 + [5] * 4
    assert {ids[n] for n in ids if n.startswith('stages.3.')} == {6}
    assert {n.split('.')[0] for n in ids} == {'stem', 'stages'}


def test_layer_wise_spread_equals_convnext_rule_for_its_depths():
    """ConvNeXt puts stage-2 block j at 3 + j // 3 (T: 9 blocks, 6 ids; B: 27, 12)."""
    for blocks, num_layers in ((9, 6), (27, 12)):
        model = MODELS.build(dict(type='mmhybrid.Conv2Former', arch=dict(
            embed_dims=8, depths=(1, 1, blocks, 1), kernel_size=3)))
        got = [model.layer_decay_id(f'stages.2.blocks.{j}.layer_scale_1', num_layers) for j in range(blocks)]
        assert got == [3 + j // 3 for j in range(blocks)]


def test_stage_wise_ids_put_every_downsampling_at_the_stem_as_convnext():
    model = conv2former()
    for name, _ in model.named_parameters():
        want = 0 if name.startswith('stem.') or '.downsample.' in name else int(name.split('.')[1]) + 1
        assert model.layer_decay_id(name, 6, 'stage_wise') == want, name


def test_group_lrs_scale_from_stem_to_heads_and_1d_params_get_no_weight_decay():
    wrapper = build(Detector(conv2former(out_norms=True)))
    got = lr_and_wd(wrapper)
    assert got['backbone.stem.0.weight'] == (0.5 ** 7, 0.05)
    assert got['backbone.stem.2.weight'] == (0.5 ** 7, 0.0)   # BN scale: 1-D
    assert got['backbone.stages.3.blocks.0.attn.att.0.weight'] == (0.5, 0.05)
    assert got['backbone.stages.3.blocks.0.layer_scale_1'] == (0.5, 0.0)
    assert got['backbone.out_norms.0.weight'] == (1.0, 0.0)                 # new layers: head rate
    assert got['head.weight'] == (1.0, 0.05)
    assert got['head.bias'] == (1.0, 0.0)


def test_frozen_parameters_are_left_out():
    model = Detector(conv2former(frozen_stages=1))
    names = set(lr_and_wd(build(model)))
    assert not any(n.startswith(('backbone.stem.', 'backbone.stages.0.')) for n in names)
    assert 'backbone.stages.1.downsample.1.weight' in names and 'backbone.stages.1.blocks.0.layer_scale_1' in names


def test_one_step_uses_the_scaled_rates():
    torch.manual_seed(0)
    model = Detector(conv2former())
    wrapper = build(model, decay_rate=0.1)
    stem_w = model.backbone.stem[0].weight
    head_w = model.head.weight
    before = stem_w.detach().clone(), head_w.detach().clone()
    model.head(model.backbone(torch.randn(1, 3, 64, 64))[0]).square().mean().backward()
    wrapper.step()
    # AdamW's first step moves each weight by about lr (plus decay): 1e-7 vs 1
    assert (stem_w - before[0]).abs().max() < 1e-5
    assert (head_w - before[1]).abs().max() > 0.5


@pytest.mark.parametrize('paramwise, message', [
    (dict(decay_type='layer_wise', num_layers=6), 'decay_rate'),
    (dict(decay_rate=0.9, decay_type='block', num_layers=6), 'decay_type'),
    (dict(decay_rate=0.9, num_layers=6, norm_decay_mult=0.), 'norm_decay_mult'),
])
def test_bad_paramwise_cfg_is_refused_naming_the_key(paramwise, message):
    with pytest.raises(ValueError, match=message):
        build_optim_wrapper(Detector(conv2former()), dict(
            constructor='mmhybrid.LayerDecayOptimizerConstructor',
            optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05), paramwise_cfg=paramwise))


def test_a_family_without_an_official_rule_decays_by_the_generic_one_and_other_models_are_refused():
    crossformer = MODELS.build(dict(type='mmhybrid.CrossFormer', arch=dict(
        embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))))
    rates = lr_and_wd(build(Detector(crossformer), decay_rate=0.5, num_layers=4))
    assert rates['backbone.patch_embed.projs.0.weight'][0] == 0.5 ** 5   # the stem: id 0
    assert rates['backbone.layers.3.blocks.0.mlp.fc2.weight'][0] == 0.5   # the deepest layer: id num_layers
    assert rates['head.weight'][0] == 1.0
    with pytest.raises(TypeError, match='mmhybrid backbone'):
        build(nn.Sequential(nn.Linear(2, 2)))
