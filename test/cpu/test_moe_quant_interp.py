"""MoE quantization modes under TRITON_INTERPRET=1 against float64 references
built from the dequantized weights: fp8 w8a8 per channel (per-token dynamic
activation scales), int8 w8a16 per channel, int4 w4a16 group-wise with and
without zero points. fp16 / fp32 activations (the interpreter's bf16 is wrong);
fp8 rounding uses the torch-RNE patch of test_moe_interp.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch

import test_moe_interp as base  # noqa: E402  (applies the interpreter fp8 rounding patch)
from python.jit import moe as mj  # noqa: E402
from python.jit import moe_quant as mq  # noqa: E402

FP8 = torch.float8_e4m3fn
CFG16 = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1)


def _poisoned(rows, cols, dtype):
    return torch.full((rows, cols), float("nan"), dtype=dtype)


# ------------------------------------------------------------ per-token quant
@pytest.mark.parametrize("M,K", [(1, 64), (7, 320), (9, 48)])
def test_per_token_quant_fp8(M, K):
    gen = torch.Generator().manual_seed(M * 100 + K)
    x = (torch.randn(M, K, generator=gen) * torch.rand(M, 1, generator=gen) * 10).half()
    x[M // 2] = 0  # an all-zero row: finite tiny scale, q == 0
    q, s = mq.per_token_quant_fp8(x, block_m=4, block_k=64)
    amax = x.float().abs().amax(1).clamp(min=1e-10)
    ref_s = amax / 448.0
    torch.testing.assert_close(s, ref_s, rtol=0, atol=0)
    ref_q = (x.float() / ref_s[:, None]).clamp(-448, 448).to(FP8)
    assert torch.equal(q.float(), ref_q.float())
    assert q.float().abs().amax(1)[x.float().abs().amax(1) > 0].eq(448).all()


# ------------------------------------------------------- fp8 per channel GEMM
@pytest.mark.parametrize("block_n", [32, 64])
@pytest.mark.parametrize("mul_w", [False, True])
def test_grouped_gemm_fp8_per_channel(block_n, mul_w):
    M, topk, E, N, K = 7, 2, 4, 96, 192
    gen = torch.Generator().manual_seed(block_n + mul_w)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).half()
    b = torch.randn(E, N, K, generator=gen) * torch.rand(E, N, 1, generator=gen) / K ** 0.5
    a_q, a_s = mq.per_token_quant_fp8(x)
    b_s = b.abs().amax(-1) / 448.0
    b_q = (b / b_s[..., None]).to(FP8)
    ref = base.ref_grouped_gemm(a_q.double() * a_s.double()[:, None], b_q.double() * b_s.double()[..., None],
                                ids, topk, w if mul_w else None)
    cfg = dict(CFG16, BLOCK_SIZE_N=block_n)
    s, e, n = mj.moe_align_block_size(ids, 16, E)
    c = _poisoned(M * topk, N, torch.float16)
    mq.invoke_grouped_gemm_per_channel(a_q, b_q, c, w if mul_w else None, s, e, n, topk, cfg, a_s, b_s,
                                       mul_routed_weight=mul_w)
    torch.testing.assert_close(c.double(), ref, atol=5e-3, rtol=5e-3)
    # The scales are the right ones: close to the unquantized product too.
    ref_hp = base.ref_grouped_gemm(x.double(), b.double(), ids, topk, w if mul_w else None)
    assert (c.double() - ref_hp).abs().max() < 0.1 * ref_hp.abs().max()


# -------------------------------------------------------- weight-only GEMMs
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,N,K", [(1, 48, 64), (9, 80, 144)])  # N, K not multiples of the tile
def test_grouped_gemm_int8_w8a16(dtype, M, N, K):
    topk, E = 2, 4
    gen = torch.Generator().manual_seed(M + N + K)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(dtype)
    b = torch.randn(E, N, K, generator=gen) * torch.rand(E, N, 1, generator=gen)
    q, s = mq.quantize_int8_per_channel(b)
    ref = base.ref_grouped_gemm(x.double(), q.double() * s.double()[..., None], ids, topk, w)
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    c = _poisoned(M * topk, N, dtype)
    mq.invoke_grouped_gemm_wq(x, q, c, w, sid, e, n, topk, CFG16, 8, s, mul_routed_weight=True)
    tol = 2e-2 if dtype == torch.float16 else 1e-4
    torch.testing.assert_close(c.double(), ref, atol=tol * ref.abs().max().item(), rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("with_zp", [False, True])
def test_grouped_gemm_int4_w4a16(dtype, group, with_zp):
    M, topk, E, N, K = 9, 2, 4, 48, 256
    gen = torch.Generator().manual_seed(group + with_zp)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(dtype)
    b = torch.randn(E, N, K, generator=gen) + (0.5 if with_zp else 0.0)  # an offset the zero points absorb
    packed, s, zp = mq.quantize_int4_groups(b, group, with_zp)
    deq = mq.dequantize_int4_groups(packed, s, zp, group)
    # The packing round-trips to int4 precision (sanity of the reference itself).
    assert (deq - b.double()).abs().max() <= 0.51 * s.double().max()
    ref = base.ref_grouped_gemm(x.double(), deq, ids, topk, w)
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    c = _poisoned(M * topk, N, dtype)
    mq.invoke_grouped_gemm_wq(x, packed, c, w, sid, e, n, topk, CFG16, 4, s, zp, group, mul_routed_weight=True)
    tol = 2e-2 if dtype == torch.float16 else 1e-4
    torch.testing.assert_close(c.double(), ref, atol=tol * ref.abs().max().item(), rtol=tol)


@pytest.mark.parametrize("int4_dot", [0, 1, 2])
@pytest.mark.parametrize("group,K,block_k,with_zp,block_n", [(64, 320, 256, True, 32), (128, 384, 256, True, 16),
                                                             (64, 192, 128, False, 32), (128, 256, 128, True, 32),
                                                             (64, 128, 64, True, 16), (192, 384, 128, True, 32),
                                                             (320, 320, 128, True, 16)], ids=str)
def test_grouped_gemm_int4_wide_k_tiles(group, K, block_k, with_zp, block_n, int4_dot):
    """K tiles of several 64-wide sub-blocks: each sub-block takes its own
    group's scale and zero point, and sub-blocks past K (K not a multiple of
    the tile) add nothing; INT4_DOT 1 and 2 give the same products (fp16: the
    interpreter's bf16 is wrong); 16-column tiles as the 2-warp decode configs.
    Groups of 3 and 5 sub-blocks (192; 320 = K, one group per row) check the
    kernel's group index (a multiply-high, not a division) off powers of two."""
    M, topk, E, N = 5, 2, 3, 32
    gen = torch.Generator().manual_seed(group + K + block_k + int4_dot)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(torch.float16)
    b = torch.randn(E, N, K, generator=gen) + (0.5 if with_zp else 0.0)
    packed, s, zp = mq.quantize_int4_groups(b, group, with_zp)
    ref = base.ref_grouped_gemm(x.double(), mq.dequantize_int4_groups(packed, s, zp, group), ids, topk, w)
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    c = _poisoned(M * topk, N, torch.float16)
    cfg = dict(CFG16, BLOCK_SIZE_K=block_k, BLOCK_SIZE_N=block_n, INT4_DOT=int4_dot)
    mq.invoke_grouped_gemm_wq(x, packed, c, w, sid, e, n, topk, cfg, 4, s, zp, group, mul_routed_weight=True)
    torch.testing.assert_close(c.double(), ref, atol=2e-2 * ref.abs().max().item(), rtol=2e-2)


def test_int4_nibble_order_and_zero_point_packing():
    """Low nibble = even k, high nibble = odd k; zero points: low nibble = even n.
    One expert, one token, weights chosen so each mistake changes the result."""
    K, N, group = 64, 32, 64
    q = torch.arange(N * K).reshape(1, N, K) % 16
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8)
    zp_vals = torch.arange(N).reshape(1, N, 1) % 16
    zp = (zp_vals[:, 0::2] | (zp_vals[:, 1::2] << 4)).to(torch.uint8)
    s = torch.ones(1, N, 1)
    x = torch.zeros(1, K, dtype=torch.float32)
    x[0, 1] = 1.0  # selects column k = 1: the high nibble of byte 0
    x[0, 2] = 0.25
    ids = torch.zeros(1, 1, dtype=torch.int32)
    sid, e, n = mj.moe_align_block_size(ids, 16, 1)
    c = _poisoned(1, N, torch.float32)
    mq.invoke_grouped_gemm_wq(x, packed, c, None, sid, e, n, 1, CFG16, 4, s, zp, group)
    want = (q[0, :, 1] - zp_vals[0, :, 0]) + 0.25 * (q[0, :, 2] - zp_vals[0, :, 0])
    assert torch.equal(c[0].double(), want.double())


# ------------------------------------------------------------ fused experts
@pytest.mark.parametrize("quant", [mq.QUANT_FP8_CHANNEL, mq.QUANT_INT8_W8A16, mq.QUANT_INT4_W4A16])
def test_fused_experts_quant(quant):
    M, E, topk, H, N, group = 5, 4, 2, 128, 64, 64
    gen = torch.Generator().manual_seed(40 + quant)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, H, generator=gen).half()
    w1 = torch.randn(E, 2 * N, H, generator=gen) / H ** 0.5
    w2 = torch.randn(E, H, N, generator=gen) / N ** 0.5
    kw = {}
    if quant == mq.QUANT_FP8_CHANNEL:
        s1, s2 = w1.abs().amax(-1) / 448.0, w2.abs().amax(-1) / 448.0
        q1, q2 = (w1 / s1[..., None]).to(FP8), (w2 / s2[..., None]).to(FP8)
        d1, d2 = q1.double() * s1.double()[..., None], q2.double() * s2.double()[..., None]
        cfg = dict(CFG16, BLOCK_SIZE_K=64)
    elif quant == mq.QUANT_INT8_W8A16:
        (q1, s1), (q2, s2) = mq.quantize_int8_per_channel(w1), mq.quantize_int8_per_channel(w2)
        d1, d2 = q1.double() * s1.double()[..., None], q2.double() * s2.double()[..., None]
        cfg = CFG16
    else:
        (q1, s1, z1), (q2, s2, z2) = (mq.quantize_int4_groups(w, group, True) for w in (w1, w2))
        d1, d2 = mq.dequantize_int4_groups(q1, s1, z1, group), mq.dequantize_int4_groups(q2, s2, z2, group)
        kw = dict(w1_zp=z1, w2_zp=z2, group_size=group)
        cfg = CFG16
    ref = base.ref_fused_experts(x, d1, d2, w, ids)
    out = mq.fused_experts_quant_jit(x, q1, q2, w, ids, quant, s1, s2, config=cfg, **kw)
    err = (out.double() - ref).abs().max() / ref.abs().max()
    # fp8 activations: 3 mantissa bits; weight-only: fp16 rounding of x, the intermediate and the output.
    assert err < (0.08 if quant == mq.QUANT_FP8_CHANNEL else 0.01), err
