"""CrossFormer behaviour beyond the parity fixtures and the contract suite (test_backbone_base.py):
variants, grouped attention, LDA modes, per-stage options."""
import pytest
import torch

from mmhybrid.models import CrossFormer
from mmhybrid.models.crossformer import GroupAttention, Grouping, block_groupings

TINY = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


@pytest.mark.parametrize('arch,params', [('tiny', 27.263), ('small', 29.887), ('base', 51.201),
                                         ('large', 90.944)])
def test_parameter_counts_equal_the_official_dense_backbones(arch, params):
    with torch.device('meta'):   # counts only; nothing allocated
        model = CrossFormer(arch=arch)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == params


def test_aliases_name_the_same_architecture():
    with torch.device('meta'):
        assert CrossFormer(arch='s').out_channels == CrossFormer(arch='small').out_channels == [96, 192, 384, 768]
        assert CrossFormer(arch='L').out_channels == [128, 256, 512, 1024]


def test_the_small_map_rule_is_not_written_into_the_module():
    """The official code writes the small-map rule (maps at or below the group size) into the module;
    this one must not: a large input after a small one gives the same maps, and no cache is a buffer."""
    model = CrossFormer(arch=TINY).eval()
    big, small = torch.randn(1, 3, 256, 320), torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        before = model(big)
        model(small)   # stage maps at or below the group size
        after = model(big)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(not name.startswith('_') for name, _ in model.named_buffers())


def _masked_group_attention(attn: GroupAttention, x: torch.Tensor, grouping: Grouping) -> torch.Tensor:
    """Straightforward reference: pad, gather groups by explicit index, mask padded keys with -1e6."""
    b, h, w, c = x.shape
    heads = attn.num_heads
    (rh, gh, ih), (rw, gw, iw) = grouping.h, grouping.w
    hp, wp = rh * gh * ih, rw * gw * iw
    xp = torch.zeros(b, hp, wp, c)
    xp[:, :h, :w] = x
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True

    def axis_members(outer, inner, interval):  # group row -> positions, in within-group order
        return [[r * inner * interval + g * interval + i for g in range(inner)]
                for r in range(outer) for i in range(interval)]

    out = torch.zeros(b, hp, wp, c)
    bias = attn.pos((gh, gw), x.device).reshape(heads, gh * gw, gh * gw)
    for ys in axis_members(rh, gh, ih):
        for xs in axis_members(rw, gw, iw):
            idx_h = torch.tensor(ys).repeat_interleave(gw)
            idx_w = torch.tensor(xs).repeat(gh)
            tokens = xp[:, idx_h, idx_w]                        # (B, N, C)
            q, k, v = attn.qkv(tokens).reshape(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            logits = q @ k.transpose(-1, -2) * (c // heads) ** -0.5 + bias
            logits = logits.masked_fill(~valid[idx_h, idx_w], -1e6)
            o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, c)
            out[:, idx_h, idx_w] = o
    return attn.proj(out[:, :h, :w])


@pytest.mark.parametrize('mode', ['sda', 'interval', 'dilated'])
@pytest.mark.parametrize('hw', [(14, 21), (17, 23), (9, 30)])
def test_padded_keys_are_excluded_like_the_official_mask(mode, hw):
    attn = GroupAttention(32, 2).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, *hw, 32)
    grouping = Grouping(*hw, mode, 4, 3)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, grouping), _masked_group_attention(attn, x, grouping),
                                   rtol=1e-4, atol=1e-5)


def test_small_maps_use_square_windows_of_the_shorter_side():
    sda, lda = block_groupings(5, 7, 7, 1, 'interval')
    assert sda is lda and sda.group_shape == (5, 5) and sda.padded == (5, 10)
    sda, lda = block_groupings(16, 24, 7, 2, 'interval')
    assert sda.group_shape == (7, 7) and lda.group_shape == (8, 12)   # LDA group spans the map


def test_original_and_dilated_lda_agree_at_224_and_differ_at_detection_sizes():
    interval = CrossFormer(arch=TINY, lda='interval').eval()
    dilated = CrossFormer(arch=TINY, lda='dilated').eval()
    dilated.load_state_dict(interval.state_dict())
    x, y = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 320, 448)
    with torch.no_grad():
        for a, b in zip(interval(x), dilated(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(interval(y)[0], dilated(y)[0], atol=1e-3)


def test_group_size_and_interval_are_configurable_per_stage():
    model = CrossFormer(arch=TINY, group_size=(14, 14, 7, 7), interval=(16, 8, 2, 1)).eval()
    assert [s.group_size for s in model.layers] == [14, 14, 7, 7]
    assert [s.interval for s in model.layers] == [16, 8, 2, 1]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 224))[0].shape == (1, 32, 40, 56)
    with pytest.raises(ValueError, match='one value per stage'):
        CrossFormer(arch=TINY, group_size=(7, 7))
    with pytest.raises(ValueError, match='lda must be one of'):
        CrossFormer(arch=TINY, lda='global')


@pytest.mark.parametrize('kernel', [4, 8, 16, 32])
def test_stem_convolution_fast_form_gives_the_direct_outputs_and_gradients(kernel):
    from mmhybrid.models.crossformer import embed_conv
    conv = torch.nn.Conv2d(3, 5, kernel, stride=4, padding=(kernel - 4) // 2)
    x = torch.randn(2, 3, 40, 56, requires_grad=True)
    direct = conv(x)
    grads_direct = torch.autograd.grad(direct.square().sum(), [x, conv.weight, conv.bias])
    fast = embed_conv(conv, x)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, conv.weight, conv.bias])
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
    for g_fast, g_direct in zip(grads_fast, grads_direct):
        torch.testing.assert_close(g_fast, g_direct, rtol=1e-4, atol=1e-4)


def test_inference_reuses_the_position_bias_until_the_weights_change(monkeypatch):
    """Without autograd each block's position bias of a group shape is computed once; an in-place weight
    change (an optimizer step, load_state_dict) makes it anew, and the maps always equal those computed
    without the cache."""
    from mmhybrid.models import crossformer
    calls = []
    compute, cache_key = crossformer.DynamicPosBias._compute, crossformer._bias_cache_key
    monkeypatch.setattr(crossformer.DynamicPosBias, '_compute', lambda self, *a: calls.append(1) or compute(self, *a))
    model = CrossFormer(arch=dict(embed_dims=32, depths=(2, 2, 1, 1), num_heads=(1, 2, 4, 8))).eval()
    x = torch.randn(1, 3, 96, 128)

    def uncached():
        monkeypatch.setattr(crossformer, '_bias_cache_key', lambda *a: None)
        with torch.no_grad():
            maps = model(x)
        monkeypatch.setattr(crossformer, '_bias_cache_key', cache_key)
        return maps

    with torch.no_grad():
        first = model(x)
        made = len(calls)
        again = model(x)
    assert made > 0 and len(calls) == made   # the second forward made no bias
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, uncached()))
    with torch.no_grad():
        model.layers[0].blocks[0].attn.pos.pos3[2].bias.add_(1.0)   # as an optimizer step does
        changed = model(x)
    assert not torch.equal(changed[0], first[0]) and torch.equal(changed[0], uncached()[0])
    model.load_state_dict(CrossFormer(arch=dict(embed_dims=32, depths=(2, 2, 1, 1), num_heads=(1, 2, 4, 8))).state_dict())
    with torch.no_grad():
        loaded = model(x)
    assert torch.equal(loaded[0], uncached()[0]) and not torch.equal(loaded[0], changed[0])
