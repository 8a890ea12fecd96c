"""CvT behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, attention, tokens, the stride-32 level, checkpoints, stage layout, initialisation."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.profiler import profile

from mmhybrid.checkpoints import CheckpointMismatchError, load_state_dict_checked
from mmhybrid.checkpoints.converters import convert_cvt
from mmhybrid.models import CvT
from mmhybrid.models.cvt import ConvAttention, QuickGELU, stage_drop_paths

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=(16, 32, 48), depths=(1, 2, 2), num_heads=(1, 2, 3))


def official_state(model: CvT, seed: int = 0) -> dict:
    """What an official file holds: the official stages' keys, the final norm and the classifier."""
    gen = torch.Generator().manual_seed(seed)
    official = model.num_official_stages
    state = {k: (torch.rand(v.shape, generator=gen) + 0.5 if k.endswith('running_var') else
                 torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
             for k, v in model.state_dict().items() if int(k.split('.')[0][len('stage'):]) < official}
    last = model.stage_channels[official - 1]
    state.update({'norm.weight': torch.ones(last), 'norm.bias': torch.zeros(last),
                  'head.weight': torch.randn(1000, last, generator=gen), 'head.bias': torch.zeros(1000)})
    return state


def huggingface_names(official: dict) -> dict:
    """The same weights under the names of HuggingFace's CvtForImageClassification."""
    renames = [('.patch_embed.proj.', '.embedding.convolution_embeddings.projection.'),
               ('.patch_embed.norm.', '.embedding.convolution_embeddings.normalization.'),
               ('.blocks.', '.layers.'), ('.norm1.', '.layernorm_before.'), ('.norm2.', '.layernorm_after.'),
               ('.mlp.fc1.', '.intermediate.dense.'), ('.mlp.fc2.', '.output.dense.'),
               ('.attn.proj.', '.attention.output.dense.')]
    for short, full in (('q', 'query'), ('k', 'key'), ('v', 'value')):
        renames += [(f'.attn.conv_proj_{short}.conv.',
                     f'.attention.attention.convolution_projection_{full}.convolution_projection.convolution.'),
                    (f'.attn.conv_proj_{short}.bn.',
                     f'.attention.attention.convolution_projection_{full}.convolution_projection.normalization.'),
                    (f'.attn.proj_{short}.', f'.attention.attention.projection_{full}.')]
    out = {}
    for key, value in official.items():
        if key.startswith(('norm.', 'head.')):
            out[key.replace('norm.', 'layernorm.').replace('head.', 'classifier.')] = value
            continue
        stage, rest = key.split('.', 1)
        rest = '.' + rest
        for old, new in renames:
            rest = rest.replace(old, new)
        out[f'cvt.encoder.stages.{stage[len("stage"):]}{rest}'] = value
    return out


def explicit_attention(attn: ConvAttention, x: torch.Tensor, hw, num_cls: int, scale: float) -> torch.Tensor:
    """The official computation written out: BN after each conv, every score materialised."""
    b, _, c = x.shape
    cls, fmap = x[:, :num_cls], x[:, num_cls:].transpose(1, 2).reshape(b, c, *hw)

    def project(conv_proj, linear):
        tokens = conv_proj.bn(conv_proj.conv(fmap)).flatten(2).transpose(1, 2)
        tokens = linear(torch.cat([cls, tokens], dim=1))
        return tokens.reshape(b, tokens.shape[1], attn.num_heads, -1).transpose(1, 2)

    q = project(attn.conv_proj_q, attn.proj_q)
    k = project(attn.conv_proj_k, attn.proj_k)
    v = project(attn.conv_proj_v, attn.proj_v)
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, -1, c))


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine terms away from the identity, so that they matter."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            nn.init.normal_(m.weight, 1.0, 0.2, generator=gen)
            nn.init.normal_(m.bias, 0.0, 0.2, generator=gen)


# --------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,backbone,with_head', [('13', 19.612, 20.0), ('21', 31.237, 31.6),
                                                     ('w24', 276.169, 277.2)])
def test_parameter_counts_equal_the_official_models(arch, backbone, with_head):
    """Published: 20M, 32M, 277M with the classifier (final LayerNorm + Linear to 1000 classes)."""
    with torch.device('meta'):
        model = CvT(arch=arch)
    params = sum(p.numel() for p in model.parameters())
    last = model.stage_channels[-1]
    assert round(params / 1e6, 3) == backbone
    assert round((params + 2 * last + last * 1000 + 1000) / 1e6, 1) == with_head


def test_names_aliases_ints_and_custom_dicts():
    with torch.device('meta'):
        assert CvT(arch=13).out_channels == CvT(arch='CvT-13').out_channels == [64, 192, 384]
    assert CvT(arch=dict(TINY, mlp_ratio=2)).stage2.blocks[0].mlp.fc1.out_features == 96
    assert CvT(arch=dict(TINY, cls_token=False)).stage2.cls_token is None
    assert CvT(arch=TINY).stage2.cls_token.shape == (1, 1, 48)
    assert CvT(arch=TINY).stage0.cls_token is None and CvT(arch=TINY).stage1.cls_token is None
    with pytest.raises(ValueError, match=r"Unknown CvT arch 'w13'. Valid names: 13, 21, cvt-13"):
        CvT(arch='w13')
    with pytest.raises(ValueError, match='differ in length'):
        CvT(arch=dict(TINY, depths=(1, 1)))
    with pytest.raises(ValueError, match='not divisible by 5 heads'):
        CvT(arch=dict(TINY, num_heads=(1, 5, 3)))


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('num_cls,hw', [(0, (7, 9)), (1, (6, 5))])
def test_fused_attention_equals_the_materialised_official_one_with_the_stage_width_scale(num_cls, hw):
    """Odd maps (keys at ceil(H/2)), with and without the class token, BN folded in eval mode."""
    torch.manual_seed(0)
    dims, heads = 48, 3
    attn = ConvAttention(dims, heads)
    randomise_norms(attn)
    attn.eval()
    x = torch.randn(2, num_cls + hw[0] * hw[1], dims)
    with torch.no_grad():
        fused = attn(x, hw, num_cls)
        official = explicit_attention(attn, x, hw, num_cls, scale=dims**-0.5)
        head_scaled = explicit_attention(attn, x, hw, num_cls, scale=(dims // heads)**-0.5)
    torch.testing.assert_close(fused, official, rtol=1e-5, atol=1e-5)
    assert (fused - head_scaled).abs().max() > 1e-3   # the scale is not the usual head_dim ** -0.5


def test_batchnorm_with_batch_statistics_in_training_mode():
    torch.manual_seed(0)
    attn = ConvAttention(16, 2).train()
    x = torch.randn(2, 1 + 6 * 8, 16)
    out = attn(x, (6, 8), 1)
    torch.testing.assert_close(out, explicit_attention(attn, x, (6, 8), 1, 16**-0.5), rtol=1e-5, atol=1e-5)


def test_training_uses_the_fused_kernel_forward_and_backward():
    """No score matrix: the fused CPU kernel runs in both directions and no softmax is materialised."""
    model = CvT(arch=TINY).train()
    with profile() as prof:
        sum(o.mean() for o in model(torch.randn(1, 3, 64, 64))).backward()
    names = {e.name for e in prof.events()}
    assert {'aten::_scaled_dot_product_flash_attention_for_cpu',
            'aten::_scaled_dot_product_flash_attention_for_cpu_backward'} <= names
    assert not {'aten::_softmax', 'aten::_softmax_backward_data'} & names


def test_quick_gelu_values_and_gradients():
    x = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    original = x.detach().clone()
    act = QuickGELU()
    torch.testing.assert_close(act(x), original * torch.sigmoid(1.702 * original))
    assert torch.equal(x.detach(), original)   # computed in place, but not in the input
    assert torch.autograd.gradcheck(act, (x, ))


def test_class_token_is_a_key_of_the_last_stage_but_not_an_output():
    model = CvT(arch=TINY).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        before = model(x)
        model.stage2.cls_token.add_(torch.randn(48))   # (a constant would vanish in norm1)
        after = model(x)
    assert [tuple(o.shape) for o in after] == [(1, 16, 16, 20), (1, 32, 8, 10), (1, 48, 4, 5)]
    torch.testing.assert_close(before[0], after[0], rtol=0, atol=0)
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=0)
    assert (before[2] - after[2]).abs().max() > 1e-3


@pytest.mark.parametrize('extra_stage,out_indices', [(False, (0, 1, 2)), (False, (0, )), (True, (3, ))])
def test_with_tokens_returns_the_last_blocks_class_token_and_the_last_official_stage(extra_stage, out_indices):
    """What the official classifier reads: the class token after the last block of the last
    official stage (every official stage runs, whatever out_indices asks for)."""
    model = CvT(arch=TINY, extra_stage=extra_stage, out_indices=out_indices, with_tokens=True).eval()
    seen = {}
    model.stage2.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__('last', o))
    with torch.no_grad():
        *maps, (patches, cls) = model(torch.randn(2, 3, 64, 80))
    assert len(maps) == len(out_indices)
    assert [m.shape[1] for m in maps] == [model.stage_channels[i] for i in out_indices]
    torch.testing.assert_close(cls, seen['last'][:, 0], rtol=0, atol=0)
    assert patches.shape == (2, 48, 4, 5) and cls.shape == (2, 48)
    torch.testing.assert_close(patches.flatten(2).transpose(1, 2), seen['last'][:, 1:], rtol=0, atol=0)


def test_with_tokens_without_class_token_returns_none_for_it():
    model = CvT(arch=dict(TINY, cls_token=False), with_tokens=True).eval()
    with torch.no_grad():
        *maps, (patches, cls) = model(torch.randn(1, 3, 64, 64))
    assert cls is None and torch.equal(patches, maps[-1])


def test_get_flops_counts_the_attention():
    """The FLOPs counter (tools/analysis/get_flops.py) counts the fused kernel: 4 * queries * keys * width
    per block."""
    from mmhybrid.analysis import count_flops
    model = CvT(arch=TINY).eval()
    with torch.no_grad():
        counted = count_flops(lambda: model(torch.randn(1, 3, 64, 96)), root=None)
    # queries / keys per stage: 16x24 / 8x12, 8x12 / 4x6, 4x6 + cls / 2x3 + cls
    expected = sum(4 * q * k * c * d for q, k, c, d in
                   [(384, 96, 16, 1), (96, 24, 32, 2), (25, 7, 48, 2)])
    assert counted['attention'] == expected


# --------------------------------------------------------------------------------------
# The stride-32 level
# --------------------------------------------------------------------------------------
def test_stride_32_level_gives_ceil_maps_at_any_size_and_trains():
    """The contract suite runs the official three levels; the added level at odd sizes, under bf16
    autocast, and in a training step, which reaches its parameters too."""
    model = CvT(arch=TINY, extra_stage=True).eval()
    assert model.out_channels == [16, 32, 48, 96] and model.out_strides == [4, 8, 16, 32]
    with torch.no_grad():
        for hw in [(64, 64), (65, 97), (70, 90), (33, 250), (200, 41), (1, 3)]:
            outs = model(torch.randn(1, 3, *hw))
            assert [tuple(o.shape) for o in outs] == [(1, ch, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
                                                      for s, ch in zip((4, 8, 16, 32), (16, 32, 48, 96))], hw
            assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs), hw
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert {(o.dtype, bool(torch.isfinite(o).all())) for o in model(torch.randn(1, 3, 70, 90))} == {
                (torch.bfloat16, True)}
    model.train()
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).mean() for o in model(torch.randn(1, 3, 70, 90))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_stride_32_level_is_optional_and_its_width_configurable():
    plain = CvT(arch=TINY)
    assert plain.out_strides == [4, 8, 16] and not hasattr(plain, 'stage3')
    wide = CvT(arch=TINY, extra_stage=True, extra_dims=40)
    assert wide.out_channels[-1] == 40 and wide.stage3.patch_embed.proj.weight.shape == (40, 48, 3, 3)
    assert list(wide.stage3.blocks) == []
    # the first three levels are the official network whatever follows
    wide.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), wide.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def test_converter_reads_huggingface_files():
    """Files in the Hugging Face transformers layout (``cvt.encoder.stages...``) convert to the official
    names (the usual file wrappings: test_converters.py)."""
    model = CvT(arch=TINY)
    official = official_state(model)
    converted = convert_cvt(huggingface_names(official))
    assert 'stage2.cls_token' in converted and not any(k.startswith(('norm.', 'head.')) for k in converted)
    load_state_dict_checked(model, converted)
    for key in ('stage2.cls_token', 'stage1.blocks.1.attn.conv_proj_k.bn.running_var',
                'stage2.blocks.0.mlp.fc2.weight', 'stage0.patch_embed.norm.bias', 'stage1.blocks.0.attn.proj.weight'):
        assert torch.equal(model.state_dict()[key], official[key]), key


def test_converter_is_idempotent_and_refuses_foreign_keys():
    model = CvT(arch=TINY)
    converted = convert_cvt(huggingface_names(official_state(model)))
    assert converted.keys() == model.state_dict().keys()
    again = convert_cvt(converted)
    assert again.keys() == converted.keys() and all(again[k] is v for k, v in converted.items())
    with pytest.raises(CheckpointMismatchError, match=r"'cvt.pooler.weight' is neither an official CvT key"):
        convert_cvt({**huggingface_names(official_state(model)), 'cvt.pooler.weight': torch.zeros(1)})


def test_checkpoint_of_another_variant_is_refused_naming_keys_and_shapes():
    with pytest.raises(CheckpointMismatchError, match=r'not in model: stage2\.blocks\.2\.'):
        load_state_dict_checked(CvT(arch=TINY), convert_cvt(official_state(CvT(arch=dict(TINY, depths=(1, 2, 3))))))
    wider = CvT(arch=dict(TINY, embed_dims=(16, 32, 64), num_heads=(1, 2, 4)))
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatch: stage2\.cls_token: checkpoint \(1, 1, 64\)'):
        load_state_dict_checked(CvT(arch=TINY), convert_cvt(official_state(wider)))


def test_init_cfg_names_the_variant_of_a_mismatched_file(tmp_path):
    path = tmp_path / 'CvT-13-224x224-IN-1k.pth'
    torch.save(official_state(CvT(arch='13')), path)
    with pytest.raises(CheckpointMismatchError, match=r"depths \(1, 2, 10\), but this backbone \(21\) has "
                       r"embed_dims \(64, 192, 384\) and depths \(1, 4, 16\). Build it with arch='13'"):
        CvT(arch='21', init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def test_init_cfg_loads_an_official_file_and_keeps_the_new_stride_32_level(tmp_path):
    source = CvT(arch=TINY)
    official = official_state(source)
    path = tmp_path / 'CvT-tiny-224x224-IN-1k.pth'
    torch.save(official, path)
    model = CvT(arch=TINY, extra_stage=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.stage2.cls_token, official['stage2.cls_token'])
    assert torch.equal(model.stage3.patch_embed.norm.weight, torch.ones(96))   # initial value
    # a dense checkpoint that has the level loads it
    dense = {**official, **{f'stage3.{k}': torch.full_like(v, 0.5)
                            for k, v in model.stage3.state_dict().items()}}
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in dense.items()}}, tmp_path / 'dense.pth')
    again = CvT(arch=TINY, extra_stage=True, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'dense.pth')))
    again.init_weights()
    assert torch.equal(again.stage3.patch_embed.proj.bias, torch.full((96, ), 0.5))


# --------------------------------------------------------------------------------------
# Stage layout, stochastic depth, initialisation
# --------------------------------------------------------------------------------------
def test_the_stem_is_the_stride_4_embedding_and_the_stride_32_level_a_fourth_stage():
    """What frozen_stages freezes: 0 the stride-4 patch embedding only (stage 0's blocks train),
    4 with the added level everything, the last stage's class token included."""
    model = CvT(arch=TINY, extra_stage=True, frozen_stages=0)
    assert model.stem_modules() == [model.stage0.patch_embed]
    assert model.stage_modules() == [model.stage0, model.stage1, model.stage2, model.stage3]
    assert not any(p.requires_grad for p in model.stage0.patch_embed.parameters())
    assert all(p.requires_grad for p in model.stage0.blocks.parameters())
    model = CvT(arch=TINY, extra_stage=True, frozen_stages=4).train()
    assert not any(p.requires_grad for p in model.parameters()) and not model.stage3.training


def test_drop_path_ramps_inside_each_stage():
    with torch.device('meta'):
        model = CvT(arch='13')   # the official 0.1
    rates = [[getattr(b.drop_path, 'drop_prob', 0.0) for b in s.blocks] for s in (model.stage0, model.stage1,
                                                                                   model.stage2)]
    assert rates[0] == [0.0] and rates[1] == [0.0, 0.0]
    assert rates[2] == pytest.approx([0.1 * j / 9 for j in range(10)])
    with torch.device('meta'):
        w24 = CvT(arch='w24')
    assert max(b.drop_path.drop_prob for b in w24.stage2.blocks[1:]) == pytest.approx(0.3)
    assert isinstance(w24.stage1.blocks[1].drop_path, nn.Identity)
    ramps = stage_drop_paths((0.1, 0.2, 0.3), (1, 3, 2))
    assert ramps[0] == [0.0] and ramps[1] == pytest.approx([0.0, 0.1, 0.2]) and ramps[2] == pytest.approx([0.0, 0.3])
    with pytest.raises(ValueError, match='one rate per stage'):
        CvT(arch=TINY, drop_path_rate=(0.1, 0.2))


def test_default_init_follows_the_official_one():
    model = CvT(arch=TINY)
    model.init_weights()
    block = model.stage1.blocks[0]
    assert block.attn.proj_q.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.equal(block.attn.proj_q.bias, torch.zeros(32))
    assert torch.equal(block.attn.conv_proj_k.bn.weight, torch.ones(32))
    assert model.stage2.cls_token.abs().max() > 0
