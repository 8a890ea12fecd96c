"""kernels.biased_attention: attention with a learned additive bias, chunked forward/backward on CPU."""
import pytest
import torch
import torch.nn.functional as F

from mmhybrid.models import CrossFormer, crossformer, kernels
from mmhybrid.models.kernels import attention, biased_attention

from family_archs import SMALL_ARCH


def math_attention(q, k, v, bias):
    """The reference: softmax(q k^T / sqrt(d) + bias) v with autograd, in the inputs' dtype."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
    return torch.softmax(scores, dim=-1) @ v


def make_inputs(g, heads, n, m, d, bias_shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(g, heads, n, d, generator=gen, dtype=dtype)
    k = torch.randn(g, heads, m, d, generator=gen, dtype=dtype)
    v = torch.randn(g, heads, m, d, generator=gen, dtype=dtype)
    bias = torch.randn(bias_shape, generator=gen, dtype=dtype)
    grad = torch.randn(g, heads, n, d, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v, bias)], grad


def output_and_grads(fn, inputs, grad):
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad)


# (groups, heads, queries N, keys M, head dim, bias shape): N != M, padded keys (M < N),
# bias shared by all groups (4-D with a leading 1, or 3-D), per group, or broadcast over heads
CASES = [
    (13, 3, 12, 12, 8, (1, 3, 12, 12)),
    (11, 2, 20, 13, 5, (1, 2, 20, 13)),   # padded keys: M < N
    (9, 2, 7, 15, 4, (2, 7, 15)),         # N < M, 3-D bias
    (6, 3, 10, 6, 8, (6, 3, 10, 6)),      # one bias per group
    (7, 4, 9, 9, 4, (1, 1, 9, 9)),        # one bias for all heads
]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 groups (most cases of CASES run in several chunks, the last one short)."""
    def set_groups(heads, n, m):
        monkeypatch.setattr(kernels, 'BIASED_ATTENTION_CHUNK_BYTES', 2 * heads * n * m * 4)
    return set_groups


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize('case', CASES)
def test_chunked_attention_matches_math_path_outputs_and_grads(case, dtype, tol, small_chunks):
    g, heads, n, m, d, bias_shape = case
    small_chunks(heads, n, m)
    inputs, grad = make_inputs(g, heads, n, m, d, bias_shape, dtype)
    out, grads = output_and_grads(biased_attention, inputs, grad)
    assert 'BiasedAttention' in type(out.grad_fn).__name__  # the custom path ran
    ref, ref_grads = output_and_grads(math_attention, inputs, grad)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for got, want, t in zip(grads, ref_grads, inputs):
        assert got.dtype == t.dtype and got.shape == t.shape
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize('case', CASES[:3])
def test_chunked_attention_under_bf16_autocast_matches_fp32_reference(case, small_chunks):
    g, heads, n, m, d, bias_shape = case
    small_chunks(heads, n, m)
    inputs, grad = make_inputs(g, heads, n, m, d, bias_shape, torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = biased_attention(*[t.to(torch.bfloat16) for t in inputs[:3]], inputs[3].to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out, inputs, grad.to(torch.bfloat16))
    ref, ref_grads = output_and_grads(math_attention, inputs, grad)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    for got, want, t in zip(grads, ref_grads, inputs):
        assert got.dtype == torch.float32  # the casts' backward brings them back to the fp32 leaves
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= 0.05 * scale


def test_chunked_attention_under_bf16_autocast_is_as_accurate_as_the_plain_ops_under_autocast(small_chunks):
    """Against an fp64 reference, the bf16 outputs and gradients are as close as autocast's own run of the
    plain ops (q k^T, + bias, softmax, @ v: what the official implementations train with)."""
    small_chunks(3, 49, 49)
    inputs, grad = make_inputs(13, 3, 49, 49, 32, (1, 3, 49, 49), torch.float32)
    ref, ref_grads = output_and_grads(math_attention, [t.double() for t in inputs], grad.double())
    errors = []
    for fn in (biased_attention, math_attention):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(*[t.to(torch.bfloat16) for t in inputs[:3]], inputs[3])
        grads = torch.autograd.grad(out, inputs, grad.to(torch.bfloat16))
        errors.append([(a.double() - b).abs().max().item() / b.abs().max().item()
                       for a, b in zip([out, *grads], [ref, *ref_grads])])
    ours, plain = errors
    assert all(e < 0.02 for e in ours), ours
    assert all(o <= 1.5 * p + 1e-4 for o, p in zip(ours, plain)), (ours, plain)


def test_chunked_attention_casts_fp32_inputs_like_sdpa_under_autocast():
    inputs, grad = make_inputs(4, 2, 6, 5, 4, (1, 2, 6, 5), torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = biased_attention(*inputs)
        plain = F.scaled_dot_product_attention(*inputs[:3], attn_mask=inputs[3])
    assert out.dtype == plain.dtype == torch.bfloat16
    grads = torch.autograd.grad(out, inputs, grad.to(torch.bfloat16))
    assert all(g.dtype == torch.float32 for g in grads)


def test_chunked_attention_passes_gradcheck_in_fp64(small_chunks):
    small_chunks(2, 4, 3)
    inputs, _ = make_inputs(3, 2, 4, 3, 2, (1, 2, 4, 3), torch.float64)
    assert torch.autograd.gradcheck(biased_attention, inputs)


def test_without_autotune_inference_runs_plain_sdpa(monkeypatch):
    monkeypatch.setattr(kernels, 'CPU_INFERENCE_AUTOTUNE', False)
    inputs, _ = make_inputs(3, 2, 5, 5, 4, (1, 2, 5, 5), torch.float32)
    with torch.no_grad():
        out = biased_attention(*inputs)
        want = F.scaled_dot_product_attention(*inputs[:3], attn_mask=inputs[3])
        assert torch.equal(out, want)
        assert torch.equal(attention(*inputs[:3]), F.scaled_dot_product_attention(*inputs[:3]))
    frozen = [t.detach() for t in inputs]
    assert biased_attention(*frozen).grad_fn is None


@pytest.mark.parametrize('dtype,autocast,tol', [(torch.float32, False, 1e-5), (torch.float32, True, 3e-2),
                                                (torch.bfloat16, False, 3e-2)])
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('chunked', [False, True], ids=['one-block', 'blocks'])
def test_both_cpu_inference_paths_compute_the_same_attention(case, dtype, autocast, tol, chunked, monkeypatch):
    """Whichever path the timing picks (SDPA's fused kernel or the plain/chunked ops), the output is
    the same: every path is run here and compared, with and without a bias, in one block or in
    blocks of 1-2 groups / query rows."""
    if chunked:
        monkeypatch.setattr(kernels, 'BIASED_ATTENTION_CHUNK_BYTES', 1)
        monkeypatch.setattr(kernels, 'INFERENCE_CHUNK_BYTES', 2 * case[1] * case[3] * 4)
    runs = []

    def every_path(what, paths):
        runs.append([path() for path in paths])
        return runs[-1][0]

    monkeypatch.setattr(kernels, '_fastest', every_path)
    inputs, _ = make_inputs(*case, dtype)
    q, k, v, bias = (t.detach() for t in inputs)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        biased_attention(q, k, v, bias)
        attention(q, k, v)
    assert len(runs) == 2 and all(len(outs) == 2 for outs in runs)
    for sdpa, plain in runs:
        assert sdpa.dtype == plain.dtype and sdpa.shape == plain.shape
        torch.testing.assert_close(plain.float(), sdpa.float(), atol=tol, rtol=tol)


def test_cpu_inference_keeps_the_path_timed_faster_for_each_shape(monkeypatch):
    import time
    monkeypatch.setattr(kernels, '_FASTEST', {})
    calls = []

    def slow():
        calls.append('slow')
        time.sleep(0.01)
        return torch.zeros(1)

    def fast():
        calls.append('fast')
        return torch.ones(1)

    x = torch.zeros(2, 3)
    assert kernels._fastest(('demo', x), (slow, fast)).item() == 1
    assert calls.count('slow') == 2 and calls.count('fast') == 2   # timed twice each, interleaved
    calls.clear()
    assert kernels._fastest(('demo', x), (slow, fast)).item() == 1
    assert calls == ['fast']                                       # remembered for this shape
    kernels._fastest(('demo', torch.zeros(3, 3)), (slow, fast))
    assert len(kernels._FASTEST) == 2                              # another shape is timed anew
    from torch.utils.flop_counter import FlopCounterMode
    calls.clear()
    with FlopCounterMode(display=False):                           # counted: the first path, once
        kernels._fastest(('demo', torch.zeros(4, 3)), (slow, fast))
    assert calls == ['slow'] and len(kernels._FASTEST) == 2


@pytest.fixture
def plain_path(monkeypatch):
    def use(plain):
        monkeypatch.setattr(crossformer, 'CHUNKED_BIAS_ATTENTION', not plain)
    return use


def test_crossformer_training_step_grads_equal_with_chunked_and_plain_attention(plain_path, monkeypatch):
    # chunks of 1-2 groups in the first stages (49 queries, 1-2 heads), so most calls run several
    monkeypatch.setattr(kernels, 'BIASED_ATTENTION_CHUNK_BYTES', 2 * 49 * 49 * 4)
    calls = []
    monkeypatch.setattr(crossformer, 'biased_attention',
                        lambda *args: calls.append(1) or biased_attention(*args))
    torch.manual_seed(0)
    model = CrossFormer(arch=SMALL_ARCH['CrossFormer'], drop_path_rate=0.0).double().train()
    # 70x90: padded groups (keys left out, M < N) in the stages whose maps exceed the group size
    x = torch.randn(1, 3, 70, 90, dtype=torch.float64)
    grads = {}
    for plain in (True, False):
        plain_path(plain)
        model.zero_grad(set_to_none=True)
        outs = model(x)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs).backward()
        grads[plain] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert calls  # the chunked path ran for the second step
    assert grads[True].keys() == grads[False].keys()
    assert any('attn.pos' in n for n in grads[False])
    for name, want in grads[True].items():
        torch.testing.assert_close(grads[False][name], want, rtol=1e-9, atol=1e-11, msg=name)


def test_attention_in_cpu_bf16_training_takes_the_plain_ops_up_to_the_score_budget(monkeypatch):
    """Under CPU bf16 autocast in training: matmul + softmax + matmul (as close to fp32 as SDPA is) up to
    MATH_ATTENTION_MAX_SCORES scores, SDPA's kernel beyond it; outside autocast always SDPA, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16, generator=gen).requires_grad_() for _ in range(3))
    grad = torch.randn(2, 3, 40, 16, generator=gen)
    ref = F.scaled_dot_product_attention(*(t.double() for t in (q, k, v)))
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad.double())

    def run(budget):
        monkeypatch.setattr(kernels, 'MATH_ATTENTION_MAX_SCORES', budget)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = attention(q, k, v)
        return out, torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))

    plain, fused = run(2 * 3 * 40 * 40), run(2 * 3 * 40 * 40 - 1)
    assert 'ScaledDotProduct' not in type(plain[0].grad_fn).__name__
    assert 'ScaledDotProduct' in type(fused[0].grad_fn).__name__
    for out, grads in (plain, fused):
        assert out.dtype == torch.bfloat16
        for got, want in zip([out, *grads], [ref, *ref_grads]):
            assert (got.double() - want).abs().max() <= 0.02 * want.abs().max()
    with torch.no_grad():
        assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    out = attention(q, k, v)
    assert 'ScaledDotProduct' in type(out.grad_fn).__name__
