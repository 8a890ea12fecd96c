"""Conformer behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, fast paths, patch sizes and tokens, checkpoints, stage layout, initialisation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmhybrid.checkpoints import CheckpointMismatchError, load_state_dict_checked
from mmhybrid.checkpoints.converters import convert_conformer
from mmhybrid.models import Conformer
from mmhybrid.models.conformer import FCUDown, FCUUp, add_upsampled
from mmhybrid.models.kernels import conv_bn

from family_archs import old_layout_state, randomize

# widths 16, 32, 64, 64; six blocks: maps after blocks 2, 4, 5, 6
TINY = dict(patch_size=16, channel_ratio=1, base_channels=16, embed_dims=32, num_heads=2, depth=6)
TINY_P32 = dict(TINY, patch_size=32)


def official_classifier_state(model: Conformer, num_classes: int = 1000) -> dict:
    """What an official classification file holds: the backbone (official names) plus trans_norm and
    both classifiers."""
    state = old_layout_state(model)
    dims, c3 = model.embed_dims, model.stage_channels[-1]
    state.update({'trans_norm.weight': torch.ones(dims), 'trans_norm.bias': torch.zeros(dims),
                  'trans_cls_head.weight': torch.randn(num_classes, dims),
                  'trans_cls_head.bias': torch.zeros(num_classes),
                  'conv_cls_head.weight': torch.randn(num_classes, c3),
                  'conv_cls_head.bias': torch.zeros(num_classes)})
    return state


def mmpretrain_state(model: Conformer) -> dict:
    """mmpretrain's converted files: 'backbone.' prefix, ln1/ln2 and ffn.layers.* in transformer blocks."""
    renames = (('.norm1.', '.ln1.'), ('.norm2.', '.ln2.'), ('.mlp.fc1.', '.ffn.layers.0.0.'),
               ('.mlp.fc2.', '.ffn.layers.1.'))
    state = {}
    for k, v in old_layout_state(model).items():
        if k.startswith(('trans_1.', 'conv_trans_')) and ('trans_1.' in k or '.trans_block.' in k):
            for old, new in renames:
                k = k.replace(old, new)
        state[f'backbone.{k}'] = v
    dims = model.embed_dims
    state.update({'backbone.trans_norm.weight': torch.ones(dims),
                  'backbone.trans_norm.bias': torch.zeros(dims),
                  'head.conv_cls_head.weight': torch.randn(10, model.stage_channels[-1]),
                  'head.conv_cls_head.bias': torch.zeros(10),
                  'head.trans_cls_head.weight': torch.randn(10, dims),
                  'head.trans_cls_head.bias': torch.zeros(10)})
    return {'meta': {'mmpretrain_version': '1.2.0'}, 'state_dict': state}


# --------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,backbone,with_heads', [
    ('tiny', 22.882, 23.5), ('small', 36.263, 37.7), ('small_p32', 37.442, None), ('base', 81.174, 83.3)])
def test_parameter_counts_equal_the_official_ones(arch, backbone, with_heads):
    """Backbone params as the official detection backbone; with trans_norm and the two
    classifiers of the official ImageNet model, the published 23.5M / 37.7M / 83.3M."""
    with torch.device('meta'):
        model = Conformer(arch=arch)
    params = sum(p.numel() for p in model.parameters())
    dims, c3 = model.embed_dims, model.stage_channels[-1]
    heads = 2 * dims + (1000 * dims + 1000) + (1000 * c3 + 1000)
    assert round(params / 1e6, 3) == backbone
    if with_heads is not None:
        assert round((params + heads) / 1e6, 1) == with_heads


def test_variants_aliases_and_custom_dicts():
    with torch.device('meta'):
        assert Conformer(arch='s32').patch_size == 32 and Conformer(arch='S').patch_size == 16
        assert Conformer(arch='b').out_channels == [384, 768, 1536, 1536]
        assert Conformer(arch='tiny').out_channels == [64, 128, 256, 256]
    model = Conformer(arch=TINY, out_indices=(0, 1, 2, 3))
    assert model.out_channels == [16, 32, 64, 64] and model.out_strides == [4, 8, 16, 32]
    assert model.stage_ends == (2, 4, 5, 6)
    assert model.stages[3].blocks[0].fusion_block.conv2.stride == (2, 2)   # the last fusion block downsamples
    assert [b.squeeze_block.dw_stride for b in model.blocks()] == [4, 2, 2, 1, 1]


@pytest.mark.parametrize('arch,message', [
    ('huge', 'Valid names: b, base, s, s16, s32, small, small_p32, t, tiny'),
    (dict(TINY, patch_size=24), 'patch_size must be a multiple of 16'),
    (dict(TINY, depth=7), 'depth must be a multiple of 3'),
    (dict(TINY, num_heads=3), 'not divisible by num_heads 3'),
    (dict(patch_size=16, channel_ratio=1), r"missing \['embed_dims', 'num_heads'\]")])
def test_bad_arch_is_refused_with_a_clear_message(arch, message):
    with pytest.raises(ValueError, match=message):
        Conformer(arch=arch)


# --------------------------------------------------------------------------------------
# Fast paths equal the plain computation (values and gradients)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('kernel,stride,bias', [(1, 1, False), (3, 2, False), (1, 1, True)])
def test_frozen_batchnorm_folded_into_the_conv_equals_conv_then_batchnorm(kernel, stride, bias):
    conv = nn.Conv2d(6, 8, kernel, stride=stride, padding=kernel // 2, bias=bias)
    bn = randomize(nn.BatchNorm2d(8, eps=1e-6)).eval()
    x = torch.randn(2, 6, 9, 11).contiguous(memory_format=torch.channels_last).requires_grad_()
    grads = []
    for fn in (lambda: F.relu(conv_bn(x, conv, bn)), lambda: F.relu(bn(conv(x)))):
        out = fn()
        grad = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(),
                                   [x, conv.weight, bn.weight, bn.bias])
        grads.append((out.detach(), ) + grad)
    for fast, plain in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(bn.running_mean, randomize(nn.BatchNorm2d(8)).running_mean)   # statistics untouched


@pytest.mark.parametrize('size,scale', [((8, 12), 4), ((6, 10), 2), ((7, 9), 4), ((5, 5), 1)])
def test_upsampled_add_equals_adding_the_nearest_interpolated_map(size, scale):
    """Whole grids go through a broadcast view; a cut border patch is the interpolated map cut to size."""
    x = torch.randn(2, 3, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    grid = [math.ceil(s / scale) for s in size]
    small = torch.randn(2, 3, *grid, requires_grad=True)
    fast = add_upsampled(x, small, scale)
    plain = x + F.interpolate(small, scale_factor=scale, mode='nearest')[..., :size[0], :size[1]]
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
    weights = torch.randn(fast.shape)
    for a, b in zip(torch.autograd.grad((fast * weights).sum(), [x, small]),
                    torch.autograd.grad((plain * weights).sum(), [x, small])):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    if size[0] % scale == 0:
        assert fast.is_contiguous(memory_format=torch.channels_last)


def test_fcu_down_pools_then_projects_like_the_official_project_then_pool():
    down = randomize(FCUDown(8, 12, dw_stride=4))
    x = torch.randn(2, 8, 8, 12)
    official = F.avg_pool2d(down.conv_project(x), 4, 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(down(x), down.act(down.ln(official)), rtol=1e-5, atol=1e-5)


def test_a_border_patch_cut_by_the_map_edge_averages_its_real_pixels():
    down = randomize(FCUDown(8, 12, dw_stride=4))
    x = torch.randn(1, 8, 6, 9)   # token grid 2 x 3; the last row and column of patches are cut
    tokens = down(x)
    assert tokens.shape == (1, 6, 12)
    corner = x[:, :, 4:, 8:].mean((2, 3))   # 2 x 1 real pixels
    expect = down.act(down.ln(F.linear(corner, down.conv_project.weight.flatten(1), down.conv_project.bias)))
    torch.testing.assert_close(tokens[:, -1], expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('train_bn', [False, True])
def test_fcu_up_projects_normalises_and_activates_on_the_token_grid(train_bn):
    up = randomize(FCUUp(12, 8, up_stride=4)).train(train_bn)
    tokens = torch.randn(2, 3 * 5, 12)
    grid_map = tokens.transpose(1, 2).reshape(2, 12, 3, 5)
    plain = randomize(FCUUp(12, 8, up_stride=4)).train(train_bn)   # same weights, plain modules
    expect = F.relu(plain.bn(plain.conv_project(grid_map)))
    torch.testing.assert_close(up(tokens, (3, 5)), expect, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Patch sizes, tokens
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', [TINY, TINY_P32], ids=['p16', 'p32'])
def test_any_input_size_runs_at_either_patch_size_with_a_ceil_token_grid(arch):
    """The official code needs ceil(H / 4) to be a multiple of patch / 4; here every size runs, the
    maps at ceil strides (patch 16: the contract suite) and the tokens on a ceil(H / patch) grid."""
    model = Conformer(arch=arch, with_tokens=True).eval()
    patch = arch['patch_size']
    with torch.no_grad():
        for hw in [(64, 64), (70, 90), (65, 97), (33, 250), (200, 41), (1, 3)]:
            *maps, (patches, cls) = model(torch.randn(1, 3, *hw))
            assert [tuple(o.shape) for o in maps] == [(1, ch, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
                                                      for s, ch in zip((4, 8, 16, 32), (16, 32, 64, 64))], hw
            assert all(torch.isfinite(o).all() for o in maps), hw
            assert patches.shape == (1, 32, math.ceil(hw[0] / patch), math.ceil(hw[1] / patch)), hw
            assert cls.shape == (1, 32)


def test_returned_tokens_are_the_last_transformer_output_and_the_class_token_enters_doubled():
    model = randomize(Conformer(arch=TINY, with_tokens=True)).eval()
    seen = {}
    model.stages[0].trans_block.register_forward_hook(lambda m, i, o: seen.setdefault('trans_1', o))
    model.stages[0].blocks[0].trans_block.register_forward_hook(lambda m, i, o: seen.setdefault('block_2_in', i[0]))
    model.stages[3].blocks[0].trans_block.register_forward_hook(lambda m, i, o: seen.setdefault('last', o))
    with torch.no_grad():
        *_, (patches, cls) = model(torch.randn(2, 3, 64, 96))
    torch.testing.assert_close(seen['block_2_in'][:, 0], 2 * seen['trans_1'][:, 0])
    torch.testing.assert_close(cls, seen['last'][:, 0])
    # row-major token order: token 1 + r * 6 + c is grid cell (r, c)
    torch.testing.assert_close(patches[:, :, 2, 5], seen['last'][:, 1 + 2 * 6 + 5])


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['classification', 'detection', 'mmpretrain', 'raw'])
def test_converter_reads_official_detection_and_mmpretrain_files(kind):
    model = randomize(Conformer(arch=TINY))
    ckpt = {
        'classification': {'model': official_classifier_state(model)},
        'detection': {'meta': {}, 'state_dict': {
            **{f'backbone.{k}': v for k, v in model.state_dict().items()},
            'neck.lateral_convs.0.conv.weight': torch.randn(8, 16, 1, 1)}},
        'mmpretrain': mmpretrain_state(model),
        'raw': official_classifier_state(model),
    }[kind]
    converted = convert_conformer(ckpt)
    assert converted.keys() == model.state_dict().keys()
    target = Conformer(arch=TINY)
    load_state_dict_checked(target, converted)
    official = old_layout_state(model)
    for key, official_key in (('stages.0.trans_block.norm1.weight', 'trans_1.norm1.weight'),
                              ('stages.1.blocks.0.trans_block.mlp.fc2.weight',
                               'conv_trans_3.trans_block.mlp.fc2.weight'),
                              ('cls_token', 'cls_token'), ('bn1.running_var', 'bn1.running_var'),
                              ('stages.3.blocks.0.fusion_block.residual_bn.running_var',
                               'conv_trans_6.fusion_block.residual_bn.running_var')):
        assert torch.equal(target.state_dict()[key], official[official_key])


def test_converter_maps_the_official_layout_of_a_depth_12_network_to_the_stages():
    """Blocks 2-4 in stage 0 (after the first block), 5-8 in stage 1, 9-11 in stage 2, 12 in stage 3."""
    with torch.device('meta'):
        model = Conformer(arch='tiny')
    official = old_layout_state(model)
    assert {'conv_1.conv1.weight', 'trans_patch_conv.weight', 'trans_1.attn.qkv.weight',
            'conv_trans_12.fusion_block.residual_conv.weight'} <= set(official)
    converted = convert_conformer(official)
    assert list(converted) == list(model.state_dict())
    renamed = {official_key: key for official_key, key in zip(official, converted)}
    assert renamed['conv_1.conv1.weight'] == 'stages.0.cnn_block.conv1.weight'
    assert renamed['trans_patch_conv.weight'] == 'stages.0.patch_embed.weight'
    assert renamed['trans_1.attn.qkv.weight'] == 'stages.0.trans_block.attn.qkv.weight'
    for number, name in ((2, 'stages.0.blocks.0'), (4, 'stages.0.blocks.2'), (5, 'stages.1.blocks.0'),
                         (8, 'stages.1.blocks.3'), (9, 'stages.2.blocks.0'), (11, 'stages.2.blocks.2'),
                         (12, 'stages.3.blocks.0')):
        assert renamed[f'conv_trans_{number}.cnn_block.conv1.weight'] == f'{name}.cnn_block.conv1.weight'
    assert renamed['conv1.weight'] == 'conv1.weight' and renamed['cls_token'] == 'cls_token'


def test_converter_refuses_fused_blocks_that_make_no_conformer():
    official = old_layout_state(Conformer(arch=TINY))
    with pytest.raises(ValueError, match='conv_trans_7: a Conformer has a multiple of 3 blocks'):
        convert_conformer({**official, 'conv_trans_7.cnn_block.conv1.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='conv_trans_1.cnn_block.conv1.weight is not a block'):
        convert_conformer({**official, 'conv_trans_1.cnn_block.conv1.weight': torch.zeros(1)})


def test_converter_is_idempotent_and_keeps_fcu_down_norm_names():
    model = Conformer(arch=TINY)
    converted = convert_conformer(mmpretrain_state(model))
    again = convert_conformer(converted)
    assert again.keys() == converted.keys() and all(again[k] is v for k, v in converted.items())
    assert 'stages.0.blocks.0.squeeze_block.ln.weight' in converted   # FCUDown's 'ln' is not a block norm


def test_init_cfg_loads_an_mmpretrain_file(tmp_path):
    source = randomize(Conformer(arch=TINY_P32))
    path = tmp_path / 'conformer_mmpretrain.pth'
    torch.save(mmpretrain_state(source), path)
    model = Conformer(arch=TINY_P32, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_checkpoint_of_another_patch_size_is_refused_naming_the_shapes():
    p32 = convert_conformer(official_classifier_state(Conformer(arch=TINY_P32)))
    with pytest.raises(CheckpointMismatchError, match=r'stages\.0\.patch_embed\.weight: checkpoint '
                                                      r'\(32, 64, 8, 8\) vs model \(32, 64, 4, 4\)'):
        load_state_dict_checked(Conformer(arch=TINY), p32)


# --------------------------------------------------------------------------------------
# Stage layout, stochastic depth, initialisation
# --------------------------------------------------------------------------------------
def test_stage_0_holds_the_first_block_and_the_class_token_is_frozen_with_it():
    """What frozen_stages freezes (the stem is conv1 + bn1); the class token, a parameter outside
    the stage modules, is frozen with stage 0 and stays so in training."""
    model = Conformer(arch=TINY, frozen_stages=1).train()
    assert model.stem_modules() == [model.conv1, model.bn1]
    assert model.stage_modules() == list(model.stages)
    first = model.stages[0]
    assert [name for name, _ in first.named_children()] == ['cnn_block', 'patch_embed', 'trans_block', 'blocks']
    assert [[name for name, _ in s.named_children()] for s in model.stages[1:]] == [['blocks']] * 3
    assert [len(s.blocks) for s in model.stages] == [1, 2, 1, 1]   # blocks 2 | 3, 4 | 5 | 6
    assert model.blocks() == [b for s in model.stages for b in s.blocks]
    assert not model.cls_token.requires_grad and not first.trans_block.training
    assert Conformer(arch=TINY, frozen_stages=0).cls_token.requires_grad


def test_drop_path_rises_linearly_over_the_transformer_blocks_only():
    with torch.device('meta'):
        model = Conformer(arch='tiny', drop_path_rate=0.3)
    rates = [model.stages[0].trans_block.drop_path.drop_prob]
    rates += [b.trans_block.drop_path.drop_prob for b in model.blocks()]
    assert rates == pytest.approx([0.3 * i / 11 for i in range(12)])
    assert not any(hasattr(m, 'drop_prob') for b in model.blocks() for m in b.cnn_block.modules())


def test_default_init_is_the_official_one():
    model = Conformer(arch=TINY)
    model.init_weights()
    fc1 = model.stages[0].blocks[0].trans_block.mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.equal(fc1.bias, torch.zeros(128))
    conv = model.stages[1].blocks[1].cnn_block.conv3   # block 4; kaiming fan-out: std sqrt(2 / 32)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 32), rel=0.15)
    assert 0.005 < model.cls_token.std().item() < 0.05
