"""CloFormer behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, outputs, attention, the fused inference path, checkpoints, norm layers, initialisation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmhybrid.checkpoints import CheckpointMismatchError, load_state_dict_checked
from mmhybrid.checkpoints.converters import convert_cloformer
from mmhybrid.models import CloFormer
from mmhybrid.models import kernels as cpu_kernels
from mmhybrid.models.cloformer import CloAttention

TINY = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1), num_heads=(2, 2, 3, 4),
            group_splits=((1, 1), (1, 1), (2, 1), (1, 3)))
TINY_WIDTHS = (16, 32, 48, 64)


def official_state(model: CloFormer, seed: int = 0) -> dict:
    """What the official code saves: the backbone keys plus the classifier's final GroupNorm and head."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.rand(v.shape, generator=gen) + 0.5 if 'running_var' in k else
             torch.randn(v.shape, generator=gen) * 0.2 if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    last = model.stage_channels[-1]
    state.update({'norm.weight': torch.ones(last), 'norm.bias': torch.zeros(last),
                  'head.weight': torch.randn(1000, last), 'head.bias': torch.zeros(1000)})
    return state


# --------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,official,published', [
    ('xxs', 4_166_728, 4.2), ('xs', 7_172_216, 7.2), ('s', 12_345_576, 12.3)])
def test_parameter_counts_with_the_official_head_equal_the_official_models(arch, official, published):
    """The official models (qhfan/CloFormer model_factory) have these exact counts; the
    classifier adds GroupNorm(1, C) and Linear(C, 1000) to the backbone."""
    with torch.device('meta'):
        model = CloFormer(arch=arch)
    last = model.stage_channels[-1]
    params = sum(p.numel() for p in model.parameters())
    assert params + 2 * last + last * 1000 + 1000 == official
    assert round(official / 1e6, 1) == published


def test_variants_aliases_and_custom_dicts():
    with torch.device('meta'):
        assert CloFormer(arch='XS').out_channels == [48, 96, 160, 352]
        assert CloFormer(arch='small').out_channels == [64, 128, 224, 448]
    model = CloFormer(arch=dict(TINY, kernel_sizes=((5, 3), 3, 3, 3), pool_sizes=4, mlp_kernel_sizes=(3, 3, 5, 5),
                                group_splits=((1, 0, 1), (1, 1), (2, 1), (1, 3))))
    attn = model.layers[0].blocks[0].attn
    assert len(attn.qkvs) == 1 and attn.convs[0].kernel_size == (5, 5)   # the 0-head branch has no modules
    assert attn.pool_size == 4 and model.layers[1].blocks[0].mlp.dwconv.kernel_size == (3, 3)
    assert model.layers[3].blocks[0].attn.convs[0].kernel_size == (3, 3)


@pytest.mark.parametrize('change,message', [
    (dict(group_splits=((1, 1), (1, 1), (2, 2), (1, 3))), 'summing to num_heads=3'),
    (dict(embed_dims=(16, 32, 50, 64)), 'not divisible by num_heads 3'),
    (dict(kernel_sizes=((3, 5), 5, 7, 9)), 'one kernel per local branch'),
    (dict(mlp_kernel_sizes=4), 'positive odd'),
    (dict(pool_sizes=(8, 4, 0, 1)), 'pool_sizes must be positive'),
    (dict(num_heads=(2, 2, 3)), 'one entry per stage'),
])
def test_inconsistent_arch_dicts_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        CloFormer(arch=dict(TINY, **change))


def test_unknown_arch_lists_the_valid_names():
    with pytest.raises(ValueError, match='Valid names: s, small, x-small, xs, xx-small, xxs'):
        CloFormer(arch='tiny')
    with pytest.raises(ValueError, match=r"missing \['group_splits'\]"):
        CloFormer(arch=dict(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 1)))


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------
def test_outputs_are_the_attention_residual_of_each_downsampling_block_and_the_last_stage_output():
    model = CloFormer(arch=TINY).eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        outs = model(x)
        y = model.patch_embed(x)
        expected = []
        for layer in model.layers:
            for block in layer.blocks:
                attended = y + block.attn(block.norm1(y))
                y = block(y)[1]
            expected.append(attended if block.downsample is not None else y)
    assert [o.shape[1] for o in outs] == [16, 32, 48, 64]
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------
def window_means(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of the pixels each top-left-aligned size x size window covers (cut windows at the edges)."""
    h, w = x.shape[-2:]
    rows = [torch.stack([x[..., i:i + size, j:j + size].mean(dim=(-2, -1)) for j in range(0, w, size)], -1)
            for i in range(0, h, size)]
    return torch.stack(rows, -2)


def reference_attention(attn: CloAttention, x: torch.Tensor, group_split) -> torch.Tensor:
    """The AttnConv attention written out with plain NCHW ops, one branch at a time."""
    b, c, h, w = x.shape
    d = attn.head_dims
    outs = []
    for i in range(len(attn.qkvs)):
        qkv = attn.convs[i](attn.qkvs[i](x))
        q, k, v = qkv.reshape(b, 3, -1, h, w).unbind(1)
        fc1, _, fc2 = attn.act_blocks[i].act_block
        context = fc2(F.silu(fc1(q * k))) * d ** -0.5
        outs.append(torch.tanh(context) * v)
    heads = group_split[-1]
    if heads:
        q = attn.global_q(x).reshape(b, heads, d, h * w).transpose(-1, -2)
        pooled = window_means(x, attn.pool_size)
        kv = attn.global_kv(pooled).reshape(b, 2, heads, d, -1)
        k, v = kv[:, 0], kv[:, 1]                                  # (b, heads, d, n)
        weights = torch.softmax(q @ k * d ** -0.5, dim=-1)         # (b, heads, hw, n)
        outs.append((weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(b, heads * d, h, w))
    return attn.proj(torch.cat(outs, dim=1))


@pytest.mark.parametrize('group_split,kernels,pool,hw', [
    ((1, 1, 2), (5, 3), 4, (13, 10)),     # two local branches (the official code's default example)
    ((0, 2, 2), (5, 3), 3, (7, 7)),       # a local branch with no heads is skipped
    ((4, 0), (3, ), 2, (9, 6)),           # no global heads (the official 'no_global' ablation)
    ((4, ), (), 8, (5, 11)),              # global heads only, map smaller than one window
    ((2, 2), (7, ), 1, (6, 5)),           # no pooling (the last stage)
])
def test_attention_matches_the_written_out_formula_at_any_map_size(group_split, kernels, pool, hw):
    attn = CloAttention(32, sum(group_split), group_split, kernels, pool).eval()
    x = torch.randn(2, 32, *hw)
    with torch.no_grad():
        expected = reference_attention(attn, x, group_split)
        for layout in (torch.contiguous_format, torch.channels_last):
            torch.testing.assert_close(attn(x.contiguous(memory_format=layout)), expected, rtol=1e-5, atol=1e-5)


def test_global_pooling_is_the_official_pooling_where_the_official_code_runs():
    """Where the sides are multiples of the pool size (the only sizes the official code
    accepts) the cut-window rule is the official AvgPool2d(p, p)."""
    x = torch.randn(1, 8, 16, 24)
    torch.testing.assert_close(window_means(x, 8), nn.AvgPool2d(8, 8)(x))
    attn = CloAttention(8, 2, (1, 1), (3, ), 8).eval()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference_attention(attn, x, (1, 1)), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Fused convolution + activation (CPU inference)
# --------------------------------------------------------------------------------------
@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls of the fused oneDNN convolution (the real op still runs)."""
    op = cpu_kernels.ONEDNN_CONV
    if op is None:
        pytest.skip('this torch build has no oneDNN')
    calls = []

    def counted(*args):
        calls.append(args[7])   # the activation
        return op(*args)

    monkeypatch.setattr(cpu_kernels, 'ONEDNN_CONV', counted)
    return calls


def test_cpu_inference_fuses_the_activations_and_equals_the_plain_path(fused_calls):
    model = CloFormer(arch=TINY).eval()
    x = torch.randn(2, 3, 52, 76)
    plain = model(x)                          # grad enabled: the plain path
    assert not fused_calls
    with torch.inference_mode():
        fused = model(x)
    # per block: FFN fc1 + GELU; per local branch: FC + Swish, FC + tanh
    assert sorted(set(fused_calls)) == ['gelu', 'swish', 'tanh'] and len(fused_calls) == 5 * 3
    for a, b in zip(plain, fused):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_autocast_hooks_and_training_take_the_plain_path(fused_calls):
    model = CloFormer(arch=TINY).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(x)
    seen = []
    handle = model.layers[0].blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(x)
    handle.remove()
    model.train()(x)
    assert seen == [(1, 64, 10, 10)] and fused_calls.count('gelu') == 4   # the 4 unhooked FFNs
    with torch.no_grad():
        model(x)
    assert fused_calls.count('gelu') == 4 + 5


def test_flop_counting_sees_every_convolution_in_inference():
    """FlopCounterMode tracks modules with global hooks, so the plain convolutions run under it."""
    model = CloFormer(arch=TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    counts = []
    for context in (torch.enable_grad, torch.inference_mode):
        with context(), FlopCounterMode(display=False) as counter:
            model(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def test_converter_is_idempotent_and_keeps_exactly_the_backbone_keys():
    model = CloFormer(arch=TINY)
    converted = convert_cloformer({'model': official_state(model)})
    assert converted.keys() == model.state_dict().keys()
    again = convert_cloformer(converted)
    assert again.keys() == converted.keys() and all(again[k] is v for k, v in converted.items())


def test_init_cfg_loads_an_official_file(tmp_path):
    source = CloFormer(arch=TINY)
    official = official_state(source, seed=3)
    path = tmp_path / 'cloformer_official.pth'
    torch.save({'model': official, 'epoch': 299}, path)
    model = CloFormer(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in model.state_dict().items():
        if not key.endswith('num_batches_tracked'):
            assert torch.equal(value, official[key]), key


def test_checkpoint_of_another_variant_is_refused_naming_the_keys():
    xs = convert_cloformer({'model': official_state(CloFormer(arch=dict(TINY, embed_dims=(16, 32, 48, 96))))})
    message = r'shape mismatch: layers\.2\.blocks\.0\.mlp\.fc2\.weight: checkpoint \(96'
    with pytest.raises(CheckpointMismatchError, match=message):
        load_state_dict_checked(CloFormer(arch=TINY), xs)
    deeper = convert_cloformer(official_state(CloFormer(arch=dict(TINY, depths=(1, 2, 2, 1)))))
    with pytest.raises(CheckpointMismatchError, match=r'not in model: layers\.2\.blocks\.1\.'):
        load_state_dict_checked(CloFormer(arch=TINY), deeper)


# --------------------------------------------------------------------------------------
# Norm layers, stochastic depth, initialisation
# --------------------------------------------------------------------------------------
def test_norm_layers_default_to_batchnorm_and_follow_norm_cfg():
    model = CloFormer(arch=TINY)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 4 + 3 and all(type(m) is nn.BatchNorm2d for m in bns)   # stem + 3 shortcuts
    assert all(m.num_groups == 1 for m in model.modules() if isinstance(m, nn.GroupNorm))
    sync = CloFormer(arch=TINY, norm_cfg=dict(type='SyncBN'))
    assert isinstance(sync.patch_embed.conv1.conv[1], nn.SyncBatchNorm)
    assert isinstance(sync.layers[0].blocks[-1].downsample[1], nn.SyncBatchNorm)
    assert sync.state_dict().keys() == model.state_dict().keys()


def test_default_init_is_the_official_pytorch_default():
    model = CloFormer(arch=TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.init_weights()
    block = model.layers[1].blocks[0]
    assert torch.equal(block.norm1.weight, torch.ones(32)) and torch.equal(block.norm1.bias, torch.zeros(32))
    fc1 = block.mlp.fc1.weight
    assert fc1.abs().max() <= 1 / math.sqrt(32) and fc1.std() > 0.5 / math.sqrt(3 * 32)  # kaiming_uniform(a=sqrt 5)
    assert torch.equal(model.patch_embed.conv1.conv[1].weight, torch.ones(8))
