"""MoE quantization modes on the GPU (AOT build): fp8 w8a8 per channel with
per-token dynamic activation scales, int8 w8a16 per channel, int4 w4a16 with
group scales and optional zero points. Against float64 references built from
the dequantized weights (intermediates rounded where the operator stores them,
the fp8 activation quantization reproduced), on vLLM's test grid shapes, with
NaN-poisoned outputs; against the JIT kernels too; and the C++ API's errors
for bad inputs.
"""

import pytest
import torch

from test_moe_fused_gpu import (DEV, FP8, activation_ref, aot, fp8_ok, local_ids, make_map, need_fp8,  # noqa: E402
                                need_jit, rel_err, routing)
from tritonsrc.moe import configs as CFG  # noqa: E402
from python.jit import moe_quant as mq  # noqa: E402

CHANNEL, INT8, INT4 = CFG.QUANT_FP8_CHANNEL, CFG.QUANT_INT8_W8A16, CFG.QUANT_INT4_W4A16


# ---------------------------------------------------------------- inputs
def fp8_scale(amax):
    """max(amax, 1e-10) / 448 with IEEE division, as the quant kernels compute it.
    Not `amax / 448.0`: on CUDA torch divides by a Python scalar as a multiply by
    its fp32 reciprocal, one ulp off for about half the inputs, and a scale one
    ulp off moves some q by one fp8 step."""
    amax = amax.clamp(min=1e-10)
    return amax / torch.full_like(amax, 448.0)


def quant_w_channel_fp8(w):
    s = w.float().abs().amax(-1).clamp(min=1e-10) / 448.0
    q = (w.float() / s[..., None]).clamp(-448, 448).to(FP8)
    return q, s, None, q.double() * s.double()[..., None]


def quant_w_int8(w):
    q, s = mq.quantize_int8_per_channel(w)
    return q, s, None, q.double() * s.double()[..., None]


def quant_w_int4(w, group, with_zp):
    packed, s, zp = mq.quantize_int4_groups(w, group, with_zp)
    return packed, s, zp, mq.dequantize_int4_groups(packed, s, zp, group)


def quant_weights(w, quant, group=128, with_zp=False):
    if quant == CHANNEL:
        return quant_w_channel_fp8(w)
    if quant == INT8:
        return quant_w_int8(w)
    return quant_w_int4(w, group, with_zp)


def token_fake_quant(x):
    """float64 values after the per-token dynamic fp8 quantization."""
    xf = x.float()
    s = fp8_scale(xf.abs().amax(-1, keepdim=True))
    return (xf / s).clamp(-448, 448).to(FP8).double() * s.double()


def ref_fused(x, w1, w2, weights, ids, quant):
    """float64 fused_experts from dequantized weights; the cache between the
    GEMMs is rounded to x's dtype as the operator stores it."""
    M, K = x.shape
    N = w1.shape[1] // 2
    topk = ids.shape[1]
    xin = token_fake_quant(x) if quant == CHANNEL else x.double()
    flat = ids.reshape(-1).long()
    experts = [e for e in flat.unique().tolist() if e >= 0]  # -1: a slot an expert map drops
    cache2 = torch.zeros(M * topk, N, dtype=x.dtype, device=x.device)
    for e in experts:
        s = (flat == e).nonzero().flatten()
        h = (xin[s // topk] @ w1[e].T).to(x.dtype).double()
        cache2[s] = (activation_ref(h[:, :N], "silu") * h[:, N:]).to(x.dtype)
    ain = token_fake_quant(cache2) if quant == CHANNEL else cache2.double()
    out = torch.zeros(M, K, dtype=torch.float64, device=x.device)
    wflat = weights.reshape(-1).double()
    for e in experts:
        s = (flat == e).nonzero().flatten()
        out.index_add_(0, s // topk, wflat[s, None] * (ain[s] @ w2[e].T))
    return out


def kwargs_for(quant, s1, s2, z1, z2, group):
    if quant == CHANNEL:
        return dict(use_fp8_w8a8=True, per_channel_quant=True, w1_scale=s1, w2_scale=s2)
    if quant == INT8:
        return dict(use_int8_w8a16=True, w1_scale=s1, w2_scale=s2)
    return dict(use_int4_w4a16=True, block_shape=[0, group], w1_scale=s1, w2_scale=s2, w1_zp=z1, w2_zp=z2)


def tol(dtype, quant):
    # fp8 activations (3 mantissa bits) vs the exact fake-quantized reference:
    # only rounding-boundary flips remain; weight-only: fp16/bf16 rounding.
    if quant == CHANNEL:
        return 3e-2
    return 6e-3 if dtype == torch.float16 else 2.5e-2


def skip_unless_mode_runs(quant):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if quant == CHANNEL and not fp8_ok():
        pytest.skip("fp8 e4m3 needs sm_89+")


# vLLM's fused-MoE grid (tests/kernels/moe/test_moe.py): M, E, top-k; N and K
# are not multiples of the GEMM tiles (64/128 wide), but multiples of 16 (the
# modes are built aligned) and of the int4 group.
GRID = [(M, E, topk) for M in (1, 33, 222, 2048) for E in (8, 64) for topk in (2, 6)]
SHAPES = {CHANNEL: (576, 320, 0), INT8: (576, 320, 0), INT4: (768, 384, 128)}  # K, N, group


@pytest.mark.parametrize("quant", [CHANNEL, INT8, INT4])
@pytest.mark.parametrize("M,E,topk", GRID)
def test_fused_experts_quant_grid(M, E, topk, quant):
    import aotriton

    skip_unless_mode_runs(quant)
    dtype = torch.bfloat16 if (M + E + topk) % 2 else torch.float16
    K, N, group = SHAPES[quant]
    gen = torch.Generator().manual_seed(M * 7 + E * 3 + topk + quant)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    w1 = torch.randn(E, 2 * N, K, generator=gen).to(DEV) / K ** 0.5
    w2 = torch.randn(E, K, N, generator=gen).to(DEV) / N ** 0.5
    with_zp = quant == INT4 and M % 2 == 0
    q1, s1, z1, d1 = quant_weights(w1, quant, group, with_zp)
    q2, s2, z2, d2 = quant_weights(w2, quant, group, with_zp)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    aot(aotriton.fused_experts, x, q1, q2, w, ids, out=out, **kwargs_for(quant, s1, s2, z1, z2, group))
    assert rel_err(out, ref_fused(x, d1, d2, w, ids, quant)) < tol(dtype, quant)


# Split-K of the weight-only GEMM2 (v2src/ops/moe_fused.cc split_k_for): decode
# sizes whose GEMM2 tiles leave SMs idle and whose intermediate size N is at
# least 4 x 1024 split its K four ways into partial rows that moe_sum adds
# (top-1 included, which otherwise writes the output directly). N = 3968 stays
# unsplit: the workspace difference shows the split path's partial rows.
@pytest.mark.parametrize("quant", [INT8, INT4])
@pytest.mark.parametrize("M,topk,with_map", [(1, 2, False), (3, 1, False), (2, 2, True)])
def test_fused_experts_split_k(quant, M, topk, with_map):
    import aotriton

    skip_unless_mode_runs(quant)
    E, K, N, group, dtype = 8, 512, 4096, 128, torch.bfloat16
    gen = torch.Generator().manual_seed(M * 10 + topk + quant)
    E_ids = 2 * E if with_map else E
    w, ids = routing(M, E_ids, topk, gen)
    emap = make_map(E_ids, E, gen) if with_map else None
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    with_zp = quant == INT4 and M % 2 == 0

    def layer(n):
        q1, s1, z1, d1 = quant_weights(torch.randn(E, 2 * n, K, generator=gen).to(DEV) / K ** 0.5, quant, group,
                                       with_zp)
        q2, s2, z2, d2 = quant_weights(torch.randn(E, K, n, generator=gen).to(DEV) / n ** 0.5, quant, group,
                                       with_zp)
        return q1, q2, kwargs_for(quant, s1, s2, z1, z2, group), d1, d2

    q1, q2, kw, d1, d2 = layer(N)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    aot(aotriton.fused_experts, x, q1, q2, w, ids, out=out, expert_map=emap, **kw)
    ref = ref_fused(x, d1, d2, w, local_ids(ids, emap, E), quant)
    assert rel_err(out, ref) < tol(dtype, quant)
    slots = M * topk
    split_ws = aotriton.fused_experts_workspace_size(x, q1, q2, w, ids, expert_map=emap, **kw)
    q1u, q2u, kwu, _, _ = layer(N - group)  # int4 needs N a multiple of the group
    plain_ws = aotriton.fused_experts_workspace_size(x, q1u, q2u, w, ids, expert_map=emap, **kwu)
    # + slots * 4 * K partial values, - slots * 3 * 128 cache values (N smaller by 128)
    assert split_ws - plain_ws > slots * 2 * K * x.element_size()


@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("with_zp", [False, True])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
def test_fused_experts_int4_groups(group, with_zp, scale_dtype):
    """Both group sizes, zero points or not, vLLM's bf16 scales (converted)."""
    import aotriton

    skip_unless_mode_runs(INT4)
    M, E, topk, K, N, dtype = 64, 8, 2, 1024, 512, torch.bfloat16
    gen = torch.Generator().manual_seed(group + with_zp)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    q1, s1, z1, d1 = quant_w_int4(torch.randn(E, 2 * N, K, generator=gen).to(DEV) / K ** 0.5, group, with_zp)
    q2, s2, z2, d2 = quant_w_int4(torch.randn(E, K, N, generator=gen).to(DEV) / N ** 0.5, group, with_zp)
    s1, s2 = s1.to(scale_dtype), s2.to(scale_dtype)
    if scale_dtype != torch.float32:  # the reference uses the scales the kernel sees
        d1 = mq.dequantize_int4_groups(q1, s1.float(), z1, group)
        d2 = mq.dequantize_int4_groups(q2, s2.float(), z2, group)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    aot(aotriton.fused_experts, x, q1, q2, w, ids, out=out, **kwargs_for(INT4, s1, s2, z1, z2, group))
    assert rel_err(out, ref_fused(x, d1, d2, w, ids, INT4)) < tol(dtype, INT4)


@need_fp8
def test_per_token_quant_matches_torch():
    import aotriton

    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(300, 1024, generator=gen) * torch.rand(300, 1, generator=gen) * 20).to(DEV, torch.bfloat16)
    x[7] = 0
    q, s = aot(aotriton.per_token_quant_fp8, x)
    rs = fp8_scale(x.float().abs().amax(-1, keepdim=True))
    assert torch.equal(s.reshape(rs.shape), rs)  # bit-exact: both IEEE fp32 divisions
    assert torch.equal(q.float(), (x.float() / rs).clamp(-448, 448).to(FP8).float())


@need_jit
@pytest.mark.parametrize("quant", [CHANNEL, INT8, INT4])
def test_fused_experts_quant_matches_jit(quant):
    import aotriton

    skip_unless_mode_runs(quant)
    M, E, topk, dtype = 100, 16, 4, torch.bfloat16
    K, N, group = SHAPES[quant]
    gen = torch.Generator().manual_seed(11 + quant)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    q1, s1, z1, _ = quant_weights(torch.randn(E, 2 * N, K, generator=gen).to(DEV) / K ** 0.5, quant, group, True)
    q2, s2, z2, _ = quant_weights(torch.randn(E, K, N, generator=gen).to(DEV) / N ** 0.5, quant, group, True)
    out = aot(aotriton.fused_experts, x, q1, q2, w, ids, **kwargs_for(quant, s1, s2, z1, z2, group))
    jit = mq.fused_experts_quant_jit(x, q1, q2, w, ids, quant, s1, s2, z1, z2, group)
    assert rel_err(out, jit.double()) < 1e-2


# ---------------------------------------------------------------- bad inputs (C++ API: ValueError)
def _gemm_inputs(quant, K=256, N=128, E=4, M=8, group=128):
    import aotriton

    gen = torch.Generator().manual_seed(1)
    w, ids = routing(M, E, 2, gen)
    s, e, n = aotriton.moe_align_block_size(ids, 16, E)
    c = torch.full((M * 2, N), float("nan"), dtype=torch.bfloat16, device=DEV)
    a = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    if quant == INT4:
        b = torch.randint(0, 256, (E, N, K // 2), dtype=torch.uint8, device=DEV)
        bs = torch.rand(E, N, max(K // group, 1), device=DEV)
    else:
        b = torch.randint(-127, 128, (E, N, K), dtype=torch.int8, device=DEV)
        bs = torch.rand(E, N, 1, device=DEV)
    return a, b, c, s, e, n, bs


def test_grouped_gemm_quant_bad_inputs():
    import aotriton

    skip_unless_mode_runs(INT4)
    call = aotriton.invoke_grouped_gemm_quant
    a, b, c, s, e, n, bs = _gemm_inputs(INT4)
    with pytest.raises(ValueError, match="does not divide"):
        call(a[:, :192], b[:, :, :96], c, None, s, e, n, 2, 16, INT4, bs[:, :, :1], group_size=128)
    with pytest.raises(ValueError, match="is odd"):
        call(torch.randn(8, 255, device=DEV, dtype=torch.bfloat16), b, c, None, s, e, n, 2, 16, INT4, bs,
             group_size=128)
    with pytest.raises(ValueError, match="multiple of 64"):
        call(a, b, c, None, s, e, n, 2, 16, INT4, bs, group_size=32)
    with pytest.raises(ValueError, match="b_scale has shape"):
        call(a, b, c, None, s, e, n, 2, 16, INT4, bs[:, :, :1], group_size=128)
    with pytest.raises(ValueError, match="b_zp has shape"):
        call(a, b, c, None, s, e, n, 2, 16, INT4, bs, group_size=128,
             B_zp=torch.zeros(4, 128, 2, dtype=torch.uint8, device=DEV))
    with pytest.raises(ValueError, match="b is int8"):
        call(a, b.view(torch.int8), c, None, s, e, n, 2, 16, INT4, bs, group_size=128)
    with pytest.raises(ValueError, match="block_size 16 and 64"):
        call(a, b, c, None, s, e, n, 2, 128, INT4, bs, group_size=128)
    a8, b8, c8, s8, e8, n8, bs8 = _gemm_inputs(INT8, K=200)
    with pytest.raises(ValueError, match="aligned shapes only"):  # K = 200: not a multiple of 16
        call(a8, b8, c8, None, s8, e8, n8, 2, 16, INT8, bs8)
    with pytest.raises(ValueError, match="b_scale has shape"):
        call(a8, b8, c8, None, s8, e8, n8, 2, 16, INT8, bs8[:2])
    assert torch.isnan(c).all() and torch.isnan(c8).all()  # nothing launched
