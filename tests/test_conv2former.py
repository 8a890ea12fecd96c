"""Conv2Former behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, padding, checkpoints, output norms, stage layout, initialisation, the fused inference path."""
import pytest
import torch
import torch.nn as nn

from mmhybrid.checkpoints import CheckpointMismatchError, load_state_dict_checked
from mmhybrid.checkpoints.converters import convert_conv2former
from mmhybrid.models import Conv2Former

from family_archs import old_layout_state

TINY = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), kernel_size=5)
HEAD_KEYS = ('head.0.weight', 'head.0.bias', 'head.2.weight', 'head.2.bias', 'pred.weight', 'pred.bias')


def official_head_params(last_dims: int, num_classes: int = 1000, head_dims: int = 1280) -> int:
    """The official classifier: 1x1 conv to 1280 (bias), GELU, LayerNorm(1280), then Linear to the classes."""
    return (last_dims * head_dims + head_dims) + 2 * head_dims + (head_dims * num_classes + num_classes)


def official_state(model: Conv2Former, seed: int = 0) -> dict:
    """What an official (timm-style) file holds: the backbone keys (official names) plus the classification head."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in old_layout_state(model).items() if not k.startswith('out_norms.')}
    last = model.stage_channels[-1]
    state.update({'head.0.weight': torch.randn(1280, last, 1, 1), 'head.0.bias': torch.zeros(1280),
                  'head.2.weight': torch.ones(1280), 'head.2.bias': torch.zeros(1280),
                  'pred.weight': torch.randn(1000, 1280), 'pred.bias': torch.zeros(1000)})
    return state


# --------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,kernel,with_head,backbone', [
    ('nano', 7, 15.0, 13.053), ('tiny', 11, 26.7, 24.675), ('small', 11, 50.0, 48.011),
    ('base', 11, 90.0, 87.761), ('large', 11, 198.9, 196.298)])
def test_parameter_counts_with_the_official_head_equal_the_published_ones(arch, kernel, with_head, backbone):
    with torch.device('meta'):  # counts only; nothing allocated
        model = Conv2Former(arch=arch)
    params = sum(p.numel() for p in model.parameters())
    assert model.kernel_size == kernel
    assert round(params / 1e6, 3) == backbone
    assert round((params + official_head_params(model.stage_channels[-1])) / 1e6, 1) == with_head


def test_aliases_custom_dicts_and_kernel_size_override():
    with torch.device('meta'):
        assert Conv2Former(arch='T').out_channels == [72, 144, 288, 576]
    assert Conv2Former(arch=dict(embed_dims=16, depths=(1, 1, 1, 1))).out_channels == [16, 32, 64, 128]
    assert Conv2Former(arch=dict(embed_dims=16, depths=(1, 1, 1, 1))).kernel_size == 11
    model = Conv2Former(arch=TINY, kernel_size=7)
    assert model.kernel_size == 7 and model.stages[0].blocks[0].attn.att[2].weight.shape[-2:] == (7, 7)
    with pytest.raises(ValueError, match='positive odd'):
        Conv2Former(arch=TINY, kernel_size=8)
    with pytest.raises(ValueError, match='differ in length'):
        Conv2Former(arch=dict(embed_dims=(16, 32), depths=(1, 1, 1)))
    with pytest.raises(ValueError, match='Valid names: b, base'):
        Conv2Former(arch='huge')


# --------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------
def test_padding_only_adds_rows_and_columns_at_the_bottom_right():
    """An odd map is padded at the bottom/right, so the top-left outputs only see
    real pixels as far as the receptive field allows: the first row and column of
    the stride-4 map do not change when rows/columns are added far away."""
    model = Conv2Former(arch=TINY).eval()
    x = torch.randn(1, 3, 66, 70)
    with torch.no_grad():
        small = model(x[..., :62, :66])[0]   # 62 -> 31 after the first conv: odd, padded
        big = model(x)[0]
    torch.testing.assert_close(small[..., :4, :4], big[..., :4, :4], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def test_converter_takes_the_ema_weights_of_a_timm_file():
    """timm trained with --model-ema saves both copies; the EMA one is what was validated and published
    (the usual file wrappings: test_converters.py)."""
    model = Conv2Former(arch=TINY)
    official = official_state(model)
    converted = convert_conv2former({'state_dict': official_state(model, seed=1), 'state_dict_ema': official})
    assert not any(k.startswith(('head.', 'pred.')) for k in converted)
    load_state_dict_checked(model, converted)
    assert torch.equal(model.state_dict()['stages.1.blocks.1.attn.att.2.weight'],
                       official['stages.1.1.attn.att.2.weight'])


def test_converter_maps_the_official_layout_to_the_stem_and_the_stages():
    model = Conv2Former(arch=TINY)
    official = official_state(model)
    converted = convert_conv2former(official)
    assert list(converted) == list(model.state_dict())
    renamed = {official_key: key for official_key, key in zip(official, converted)}
    for official_key, key in (('downsample_layers.0.0.weight', 'stem.0.weight'),
                              ('downsample_layers.0.5.running_var', 'stem.5.running_var'),
                              ('downsample_layers.1.0.weight', 'stages.1.downsample.0.weight'),
                              ('downsample_layers.3.1.bias', 'stages.3.downsample.1.bias'),
                              ('stages.0.0.layer_scale_1', 'stages.0.blocks.0.layer_scale_1'),
                              ('stages.1.1.mlp.fc2.weight', 'stages.1.blocks.1.mlp.fc2.weight')):
        assert renamed[official_key] == key


def test_converter_renames_the_old_modulation_branch_and_is_idempotent():
    model = Conv2Former(arch=TINY)
    current = official_state(model)
    old = {k.replace('.attn.att.', '.attn.a.'): v for k, v in current.items()}
    assert any('.attn.a.0.' in k for k in old)
    converted = convert_conv2former({'state_dict': old})
    assert converted.keys() == convert_conv2former(current).keys() == model.state_dict().keys()
    again = convert_conv2former(converted)
    assert again.keys() == converted.keys() and all(again[k] is v for k, v in converted.items())
    assert set(HEAD_KEYS) <= set(current) and not set(HEAD_KEYS) & set(converted)


def test_init_cfg_loads_an_official_file_and_prefers_its_ema_weights(tmp_path):
    source = Conv2Former(arch=TINY)
    ema, raw = official_state(source, seed=1), official_state(source, seed=2)
    path = tmp_path / 'conv2former_official.pth.tar'
    torch.save({'epoch': 299, 'state_dict': raw, 'state_dict_ema': ema, 'version': 2}, path)
    model = Conv2Former(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.state_dict()['stem.2.running_var'], ema['downsample_layers.0.2.running_var'])
    assert torch.equal(model.stages[3].blocks[0].layer_scale_2, ema['stages.3.0.layer_scale_2'])


def test_checkpoint_with_other_kernel_size_is_refused_naming_both_sizes(tmp_path):
    seven = official_state(Conv2Former(arch=TINY, kernel_size=7))
    path = tmp_path / 'k7.pth'
    torch.save({'state_dict': seven}, path)
    eleven = Conv2Former(arch=TINY, kernel_size=11, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    message = r'7x7 depthwise kernels.*built with kernel_size=11.*Build the backbone with kernel_size=7'
    with pytest.raises(CheckpointMismatchError, match=message):
        eleven.init_weights()
    # any other loader (mmengine load_checkpoint, plain load_state_dict) names the sizes first too
    with pytest.raises(RuntimeError, match=r'has 7x7 depthwise kernels.*built with kernel_size=11'):
        eleven.load_state_dict(convert_conv2former(seven))
    right = Conv2Former(arch=TINY, kernel_size=7, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    right.init_weights()
    assert torch.equal(right.stages[2].blocks[0].attn.att[2].weight, seven['stages.2.0.attn.att.2.weight'])


def test_checkpoint_of_another_depth_is_refused_by_the_strict_loader():
    deeper = Conv2Former(arch=dict(TINY, depths=(1, 2, 2, 1)))
    with pytest.raises(CheckpointMismatchError, match=r'not in model: stages\.2\.blocks\.1\.'):
        load_state_dict_checked(Conv2Former(arch=TINY), convert_conv2former(official_state(deeper)))


# --------------------------------------------------------------------------------------
# Output norms
# --------------------------------------------------------------------------------------
def test_out_norms_off_keeps_exactly_the_official_keys_and_on_normalises_each_output():
    x = torch.randn(1, 3, 64, 96)
    plain = Conv2Former(arch=TINY).eval()
    normed = Conv2Former(arch=TINY, out_norms=True, out_indices=(1, 3)).eval()
    assert plain.out_norms is None
    assert set(plain.state_dict()) == set(convert_conv2former(official_state(plain)))
    assert sorted(k for k in normed.state_dict() if k.startswith('out_norms')) == [
        'out_norms.1.bias', 'out_norms.1.weight', 'out_norms.3.bias', 'out_norms.3.weight']
    normed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        raw, outs = plain(x), normed(x)
    for out, ref in zip(outs, (raw[1], raw[3])):
        expect = nn.functional.layer_norm(ref.permute(0, 2, 3, 1), ref.shape[1:2], eps=1e-6)
        torch.testing.assert_close(out, expect.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_out_norms_are_new_layers_when_loading_an_imagenet_file(tmp_path):
    source = Conv2Former(arch=TINY)
    path = tmp_path / 'official.pth'
    torch.save({'state_dict': official_state(source)}, path)
    model = Conv2Former(arch=TINY, out_norms=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.out_norms['2'].weight, torch.ones(48))
    official = torch.load(path)['state_dict']
    assert torch.equal(model.stages[0].blocks[0].attn.v.weight, official['stages.0.0.attn.v.weight'])


# --------------------------------------------------------------------------------------
# Stage layout, stochastic depth, initialisation
# --------------------------------------------------------------------------------------
def test_the_stem_is_the_first_downsampling_layer_and_later_stages_start_with_theirs():
    """What frozen_stages freezes and layer decay groups: the stem holds the BatchNorms."""
    model = Conv2Former(arch=TINY, frozen_stages=2)
    assert model.stem_modules() == [model.stem]
    assert model.stage_modules() == list(model.stages)
    assert model.stages[0].downsample is None
    assert [[name for name, _ in s.named_children()] for s in model.stages] == [['blocks']] + [
        ['downsample', 'blocks']] * 3
    assert [len(s.blocks) for s in model.stages] == [1, 2, 1, 1]
    assert not any(p.requires_grad for p in model.stages[1].downsample.parameters())
    assert all(p.requires_grad for p in model.stages[2].downsample.parameters())
    stem = set(model.stem.modules())   # the only BatchNorms (norm_eval's): the stem's two
    assert [m in stem for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [True, True]


def test_default_init_uses_official_layer_scales_and_std_002_convs():
    model = Conv2Former(arch=TINY)
    model.init_weights()
    block = model.stages[1].blocks[0]
    assert torch.equal(block.layer_scale_1, torch.full((32, ), 1e-6))
    # timm's trunc_normal_(std=.02) cuts at +-2 absolute: in effect a plain normal of std 0.02
    assert block.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.equal(block.mlp.fc1.bias, torch.zeros(128))


def _with_layer_scales(model, low=0.1, high=1.0):
    """Official layer scales start at 1e-6, which would hide the blocks from a comparison."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'layer_scale' in name:
                p.uniform_(low, high)
    return model


def test_fused_inference_path_equals_the_autograd_path():
    torch.manual_seed(0)
    model = _with_layer_scales(Conv2Former(arch=TINY, kernel_size=5)).eval()
    x = torch.randn(2, 3, 75, 61)
    with torch.no_grad():
        fused = model(x)
    plain = model(x)   # autograd records: the unfused path
    assert plain[0].requires_grad and not fused[0].requires_grad
    for a, b in zip(fused, plain):
        assert a.is_contiguous()
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_fused_path_is_not_taken_in_training_or_under_autocast(monkeypatch):
    import mmhybrid.models.conv2former as c2f
    calls = []
    monkeypatch.setattr(c2f.Conv2FormerBlock, 'forward_fused', lambda self, x: calls.append(1) or x)
    model = Conv2Former(arch=TINY)
    with torch.no_grad():
        model.train()(torch.randn(1, 3, 32, 32))               # train mode: drop path must apply
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model.eval()(torch.randn(1, 3, 32, 32))             # autocast picks the dtypes
    assert not calls
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert len(calls) == sum(len(s.blocks) for s in model.stages)
