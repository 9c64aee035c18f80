"""MoE Triton kernels under TRITON_INTERPRET=1 against float64 torch references.

Run: TRITON_INTERPRET=1 is set here; `pytest test/cpu/test_moe_interp.py`.
fp16 / fp32 / fp8 only (the interpreter's bf16 is wrong).
"""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch

import numpy as np  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter as _interp  # noqa: E402

from python.jit import moe as mj  # noqa: E402

FP8 = torch.float8_e4m3fn

# The triton 3.6 interpreter rounds fp32 -> fp8e4nv wrongly: a mantissa carry
# is dropped instead of bumping the exponent (7.9 -> 4.0, 31.5 -> 16.0).
# GPUs convert with round-to-nearest-even (cvt.rn.satfinite), which torch's
# float8_e4m3fn conversion matches for in-range values (the kernels clamp to
# +-448 first). Route that one conversion through torch; upcasts from fp8 are
# exact in the interpreter and stay as they are.
_orig_convert_float = _interp._convert_float


def _convert_float_fp8_rne(data, src_ty, dst_ty, rounding_mode):
    if dst_ty == tl.float8e4nv and src_ty in (tl.float32, tl.float16):
        t = torch.from_numpy(np.ascontiguousarray(data).astype(np.float32))
        return t.to(FP8).view(torch.uint8).numpy().reshape(data.shape)
    return _orig_convert_float(data, src_ty, dst_ty, rounding_mode)


_interp._convert_float = _convert_float_fp8_rne


def test_interpreter_fp8_downcast_patch():
    """The patch above is active: q = x.to(fp8) rounds like torch (RNE)."""
    x = torch.tensor([-31.5, 31.9, 15.9, 7.9, 1.97, 0.99, 447.0, 0.001953125, 0.0029], dtype=torch.float32)
    scale = torch.ones(1)
    q = mj.per_tensor_quant_fp8(x.reshape(1, -1), scale, block_m=1, block_k=16)
    assert torch.equal(q.float().flatten(), x.to(FP8).float())


# ---------------------------------------------------------------- references
def ref_topk_softmax(logits, topk, renormalize):
    p = torch.softmax(logits.double(), dim=-1)
    # Stable sort on -p: ties keep ascending expert id.
    ids = torch.sort(-p, dim=-1, stable=True).indices[:, :topk]
    w = torch.gather(p, 1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    return w, ids


def ref_align(topk_ids, block_size, num_experts, expert_map=None):
    flat = topk_ids.reshape(-1).long()
    numel = flat.numel()
    local = expert_map.long()[flat] if expert_map is not None else flat
    max_padded = numel + num_experts * (block_size - 1)
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        slots = (local == e).nonzero().flatten().tolist()
        if not slots:
            continue
        nblk = -(-len(slots) // block_size)
        sorted_ids += slots + [numel] * (nblk * block_size - len(slots))
        expert_ids += [e] * nblk
    total = len(sorted_ids)
    nblocks = -(-max_padded // block_size)
    sorted_ids += [numel] * (max_padded - total)
    expert_ids += [-1] * (nblocks - len(expert_ids))
    return torch.tensor(sorted_ids, dtype=torch.int32), torch.tensor(expert_ids, dtype=torch.int32), total


def ref_grouped_gemm(a, b, topk_ids, top_k_rows, weights=None):
    """float64: C[s] = A[s // top_k_rows] @ B[e_s]^T (* w[s]), every slot."""
    flat = topk_ids.reshape(-1).long()
    out = torch.empty(flat.numel(), b.shape[1], dtype=torch.float64)
    a64, b64 = a.double(), b.double()
    for e in flat.unique().tolist():
        s = (flat == e).nonzero().flatten()
        out[s] = a64[s // top_k_rows] @ b64[e].T
    if weights is not None:
        out *= weights.reshape(-1, 1).double()
    return out


def ref_fused_experts(x, w1, w2, topk_weights, topk_ids, local_ids=None):
    """float64 sum_k w_k * (silu(x W1g^T) * (x W1u^T)) W2^T; local_ids -1 = skipped."""
    ids = topk_ids.long() if local_ids is None else local_ids.long()
    x64, w164, w264 = x.double(), w1.double(), w2.double()
    n = w1.shape[1] // 2
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float64)
    for m in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = ids[m, k].item()
            if e < 0:
                continue
            h = x64[m] @ w164[e].T
            act = torch.nn.functional.silu(h[:n]) * h[n:]
            out[m] += topk_weights[m, k].double() * (act @ w264[e].T)
    return out


def routing(M, E, topk, gen):
    """Random distinct experts per token, weights from a real softmax."""
    ids = torch.stack([torch.randperm(E, generator=gen)[:topk] for _ in range(M)]).to(torch.int32)
    w = torch.rand(M, topk, generator=gen) + 0.1
    return w / w.sum(-1, keepdim=True), ids


# --------------------------------------------------------------- topk softmax
@pytest.mark.parametrize("E", [8, 60])
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M,topk", [(1, 2), (37, 2), (19, 6)])
def test_topk_softmax(E, renormalize, dtype, M, topk):
    torch.manual_seed(M * 100 + E + topk)
    logits = (torch.randn(M, 2 * E) * 3).to(dtype)[:, ::2]  # non-unit column stride
    w, ids = mj.topk_softmax(logits, topk, renormalize, block_m=4)
    rw, rids = ref_topk_softmax(logits, topk, renormalize)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert torch.equal(ids.long(), rids)
    torch.testing.assert_close(w.double(), rw, atol=1e-6, rtol=1e-5)


def test_topk_softmax_ties_and_large_e():
    torch.manual_seed(1)
    logits = torch.zeros(3, 300)
    logits[0, [7, 3, 250]] = 5.0          # three-way tie: 3, 7, 250
    logits[1] = torch.randn(300)
    logits[2, :] = 1.0                     # all equal: 0, 1, 2, 3
    w, ids = mj.topk_softmax(logits, 4, renormalize=True)
    assert ids[0, :3].tolist() == [3, 7, 250]
    assert ids[2].tolist() == [0, 1, 2, 3]
    rw, rids = ref_topk_softmax(logits, 4, True)
    assert torch.equal(ids.long(), rids)
    torch.testing.assert_close(w.double(), rw, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------- align
def check_align_invariants(sorted_ids, expert_ids, ntpp, topk_ids, block_size, num_experts, local):
    numel = topk_ids.numel()
    total = int(ntpp[0])
    assert total % block_size == 0
    valid = sorted_ids[:total]
    assert (sorted_ids[total:] == numel).all()
    assert (expert_ids[total // block_size:] == -1).all()
    wanted = sorted(i for i in range(numel) if local[i] >= 0)
    got = valid[valid < numel].tolist()
    assert sorted(got) == wanted  # every kept slot exactly once
    assert ((valid >= 0) & (valid <= numel)).all()
    blocks = expert_ids[:total // block_size]
    assert ((blocks >= 0) & (blocks < num_experts)).all()
    for b, e in enumerate(blocks.tolist()):
        rows = valid[b * block_size:(b + 1) * block_size]
        rows = rows[rows < numel].long()
        assert len(rows) > 0  # no block is only padding
        assert (local[rows] == e).all()


def run_align_case(topk_ids, block_size, E, expert_map=None, **kw):
    local = (expert_map.long()[topk_ids.reshape(-1).long()] if expert_map is not None
             else topk_ids.reshape(-1).long())
    rs, re, rtotal = ref_align(topk_ids, block_size, E, expert_map)
    for path in ("small", "general"):
        s, e, n = mj.moe_align_block_size(topk_ids, block_size, E, expert_map, path=path, **kw)
        check_align_invariants(s, e, n, topk_ids, block_size, E, local)
        assert int(n[0]) == rtotal
        assert torch.equal(s, rs), path
        assert torch.equal(e, re), path


@pytest.mark.parametrize("M", [1, 7, 33])
@pytest.mark.parametrize("E", [4, 8])
@pytest.mark.parametrize("topk", [1, 2])
def test_align_random(M, E, topk):
    gen = torch.Generator().manual_seed(M * 10 + E + topk)
    _, ids = routing(M, E, topk, gen)
    # block_t=16 splits the general path into several chunks for M=33.
    run_align_case(ids, 16, E, block_t=16, block_c=2, block_b=4)


def test_align_one_expert_and_empty_experts():
    ids = torch.full((33, 1), 2, dtype=torch.int32)  # all on expert 2 of 8
    run_align_case(ids, 16, 8, block_t=16, block_c=2, block_b=4)
    ids = torch.tensor([[5, 1], [1, 5], [5, 1]], dtype=torch.int32)  # 6 of 8 empty
    run_align_case(ids, 16, 8, block_t=16)
    # One expert over 25 blocks: the small path writes its expert ids in 7 tiles of 4.
    run_align_case(torch.full((100, 1), 2, dtype=torch.int32), 4, 8, block_t=16, block_c=2, block_b=4)


@pytest.mark.parametrize("M", [1, 8])
def test_align_decode_many_experts(M):
    """DeepSeek-like decode: top-8 of 256 experts, most empty, 241 blocks of expert ids."""
    gen = torch.Generator().manual_seed(M)
    _, ids = routing(M, 256, 8, gen)
    run_align_case(ids, 16, 256)


def test_align_expert_map():
    gen = torch.Generator().manual_seed(5)
    _, ids = routing(33, 8, 2, gen)
    # Global 8 experts, this rank holds globals 1, 4, 6 as locals 0, 1, 2.
    emap = torch.full((8,), -1, dtype=torch.int32)
    emap[torch.tensor([1, 4, 6])] = torch.arange(3, dtype=torch.int32)
    run_align_case(ids, 16, 3, emap, block_t=16, block_c=2, block_b=4)
    emap_none = torch.full((8,), -1, dtype=torch.int32)  # nothing local at all
    run_align_case(ids, 16, 3, emap_none, block_t=16)


def test_align_many_experts_multi_program_scan():
    gen = torch.Generator().manual_seed(6)
    _, ids = routing(150, 40, 4, gen)  # numel 600: small path uses BLOCK_T 1024
    run_align_case(ids, 8, 40, block_t=64, block_eg=16, block_c=4, block_b=16)


# -------------------------------------------------------------- grouped GEMM
GEMM_CONFIGS = [
    dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=32, GROUP_SIZE_M=2),
    dict(BLOCK_SIZE_M=32, BLOCK_SIZE_N=64, BLOCK_SIZE_K=64, GROUP_SIZE_M=1),
]


@pytest.mark.parametrize("M", [1, 7, 33])
@pytest.mark.parametrize("E", [4, 8])
@pytest.mark.parametrize("K", [80, 133])  # ALIGNED and not
@pytest.mark.parametrize("mul_w", [False, True])
def test_grouped_gemm_fp16(M, E, K, mul_w):
    topk, N = 2, 48
    gen = torch.Generator().manual_seed(M * 1000 + E * 10 + K)
    w, ids = routing(M, E, topk, gen)
    a = (torch.randn(M, K, generator=gen) / K ** 0.5).half()
    b = torch.randn(E, N, K, generator=gen).half()
    ref = ref_grouped_gemm(a, b, ids, topk, w if mul_w else None)
    for cfg in GEMM_CONFIGS:
        s, e, n = mj.moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], E)
        c = torch.full((M * topk, N), float("nan"), dtype=torch.float16)
        mj.invoke_grouped_gemm(a, b, c, w if mul_w else None, s, e, n, topk, cfg,
                               mul_routed_weight=mul_w)
        torch.testing.assert_close(c.double(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("M,E,topk,block,group", [(1, 256, 8, 16, 1), (3, 64, 6, 16, 8), (2, 8, 2, 64, 1),
                                                   (5, 60, 4, 16, 4)], ids=str)
def test_grouped_gemm_grid_bound_of_fused_experts(M, E, topk, block, group):
    """fused_experts launches its GEMMs over EM = slots + min(E, slots) * (block - 1)
    sorted rows (moe_fused.cc gemm_common), not the sorted ids' full size: every
    real block lies within it (each expert with slots pads one block at most), so
    the shorter grid computes every row; at DeepSeek-like M=1 it is 8 blocks of 241."""
    N, K = 32, 64
    gen = torch.Generator().manual_seed(M * 100 + E + topk)
    w, ids = routing(M, E, topk, gen)
    a = (torch.randn(M, K, generator=gen) / K ** 0.5).half()
    b = torch.randn(E, N, K, generator=gen).half()
    ref = ref_grouped_gemm(a, b, ids, topk, w)
    s, e, n = mj.moe_align_block_size(ids, block, E)
    slots = M * topk
    em = slots + min(E, slots) * (block - 1)
    assert em < s.numel() and n.item() <= em
    c = torch.full((slots, N), float("nan"), dtype=torch.float16)
    cfg = dict(BLOCK_SIZE_M=block, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=group)
    mj.invoke_grouped_gemm(a, b, c, w, s[:em], e, n, topk, cfg, mul_routed_weight=True)
    torch.testing.assert_close(c.double(), ref, atol=2e-2, rtol=2e-2)


def test_grouped_gemm_per_slot_a_strided_and_expert_map():
    """Per-slot A (top_k=1), strided A/B/C views, skipped slots stay untouched,
    and a block remapped to expert -1 writes zeros."""
    M, topk, E, N, K = 9, 2, 4, 40, 511
    gen = torch.Generator().manual_seed(11)
    w, ids = routing(M, E, topk, gen)
    a = (torch.randn(M * topk, K + 9, generator=gen) / K ** 0.5).half()[:, :K]  # row stride K+9
    b = torch.randn(E, N + 3, K + 1, generator=gen).half()[:, 3:, 1:]  # [E, N, K], padded strides
    emap = torch.tensor([0, -1, 1, 2], dtype=torch.int32)            # global 1 not local
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=4)
    s, e, n = mj.moe_align_block_size(ids, 16, 3, emap)
    b_local = b[[0, 2, 3]]
    c_full = torch.full((M * topk, 2 * N), float("nan"), dtype=torch.float16)
    c = c_full[:, :N]
    mj.invoke_grouped_gemm(a, b_local, c, w, s, e, n, 1, cfg, mul_routed_weight=True)
    local = emap.long()[ids.long()]
    ref = ref_grouped_gemm(a, b_local, local.clamp(min=0), 1, w)
    kept = local.reshape(-1) >= 0
    torch.testing.assert_close(c[kept].double(), ref[kept], atol=2e-2, rtol=2e-2)
    assert torch.isnan(c[~kept]).all() and torch.isnan(c_full[:, N:]).all()
    # Remap the first block to -1: its valid rows become exactly zero.
    e2 = e.clone()
    e2[0] = -1
    mj.invoke_grouped_gemm(a, b_local, c, w, s, e2, n, 1, cfg, mul_routed_weight=True)
    rows = s[:16][s[:16] < M * topk].long()
    assert (c[rows] == 0).all()


# --------------------------------------------------------------------- fp8
def ref_group_quant(x, group=128):
    M, K = x.shape
    xs = x.float().reshape(M, -1) if K % group == 0 else torch.nn.functional.pad(
        x.float(), (0, group - K % group))
    g = xs.reshape(M, -1, group)
    scale = g.abs().amax(-1).clamp(min=1e-10) / 448.0
    q = (g / scale[..., None]).clamp(-448, 448).to(FP8).reshape(M, -1)[:, :K]
    return q, scale


@pytest.mark.parametrize("M,K", [(5, 256), (9, 300)])
def test_per_token_group_quant(M, K):
    torch.manual_seed(M + K)
    x = (torch.randn(M, K) * torch.rand(M, 1) * 10).half()
    x[1, 128:256] = 0  # an all-zero group
    q, s = mj.per_token_group_quant_fp8(x, block_m=4)
    rq, rs = ref_group_quant(x)
    assert torch.equal(s, rs)
    assert torch.equal(q.float(), rq.float())
    deq = (q.float().reshape(M, -1) * s.repeat_interleave(128, 1)[:, :K])
    torch.testing.assert_close(deq, x.float(), atol=0, rtol=0.07)


def test_per_tensor_quant():
    torch.manual_seed(3)
    x = (torch.randn(7, 300) * 5).half()
    scale = torch.tensor([x.float().abs().max().item() / 300.0])  # some values clip at 448
    q = mj.per_tensor_quant_fp8(x, scale, block_m=4, block_k=128)
    rq = (x.float() / scale).clamp(-448, 448).to(FP8)
    assert torch.equal(q.float(), rq.float())


def quant_weight_block(w):
    """[E, N, K] -> fp8 + [E, cdiv(N,128), cdiv(K,128)] scales (128x128 blocks)."""
    E, N, K = w.shape
    pn, pk = (-N) % 128, (-K) % 128
    wp = torch.nn.functional.pad(w.float(), (0, pk, 0, pn))
    blk = wp.reshape(E, (N + pn) // 128, 128, (K + pk) // 128, 128)
    scale = blk.abs().amax((2, 4)).clamp(min=1e-10) / 448.0
    q = (blk / scale[:, :, None, :, None]).to(FP8).reshape(E, N + pn, K + pk)[:, :N, :K]
    return q.contiguous(), scale


def dequant_weight_block(q, scale):
    s = scale.repeat_interleave(128, 1).repeat_interleave(128, 2)[:, :q.shape[1], :q.shape[2]]
    return q.double() * s.double()


@pytest.mark.parametrize("quant", [mj.QUANT_FP8_TENSOR, mj.QUANT_FP8_BLOCK])
@pytest.mark.parametrize("block_n", [64, 256])  # block scales: one scalar / a vector per tile
def test_grouped_gemm_fp8(quant, block_n):
    M, topk, E, N, K = 7, 2, 4, 160, 300
    gen = torch.Generator().manual_seed(quant)
    w, ids = routing(M, E, topk, gen)
    x = (torch.randn(M, K, generator=gen)).half()
    b = torch.randn(E, N, K, generator=gen) / K ** 0.5
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=64, GROUP_SIZE_M=1)
    if quant == mj.QUANT_FP8_TENSOR:
        a_s = torch.tensor([x.float().abs().max().item() / 448.0])
        a_q = mj.per_tensor_quant_fp8(x, a_s)
        b_s = b.abs().amax((1, 2)) / 448.0                      # per-expert scalar
        b_q = (b / b_s[:, None, None]).to(FP8)
        a_deq = a_q.double() * a_s.double()
        b_deq = b_q.double() * b_s.double()[:, None, None]
    else:
        a_q, a_s = mj.per_token_group_quant_fp8(x)
        b_q, b_s = quant_weight_block(b)
        a_deq = a_q.double() * a_s.double().repeat_interleave(128, 1)[:, :K]
        b_deq = dequant_weight_block(b_q, b_s)
    ref = ref_grouped_gemm(a_deq, b_deq, ids, topk, w)
    s, e, n = mj.moe_align_block_size(ids, 16, E)
    c = torch.full((M * topk, N), float("nan"), dtype=torch.float16)
    mj.invoke_grouped_gemm(a_q, b_q, c, w, s, e, n, topk, cfg, mul_routed_weight=True,
                           quant=quant, a_scale=a_s, b_scale=b_s)
    torch.testing.assert_close(c.double(), ref, atol=5e-3, rtol=5e-3)
    # And the quantized product is close to the unquantized one (sanity of scales).
    ref_hp = ref_grouped_gemm(x.double(), b.double(), ids, topk, w)
    assert (c.double() - ref_hp).abs().max() < 0.1 * ref_hp.abs().max()


# ------------------------------------------------------------ fused experts
@pytest.mark.parametrize("M,E,H", [(1, 4, 72), (7, 8, 64), (33, 8, 80)])
def test_fused_experts_fp16(M, E, H):
    topk, N = 2, 48
    gen = torch.Generator().manual_seed(M + E)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, H, generator=gen).half()
    w1 = (torch.randn(E, 2 * N, H, generator=gen) / H ** 0.5).half()
    w2 = (torch.randn(E, H, N, generator=gen) / N ** 0.5).half()
    ref = ref_fused_experts(x, w1, w2, w, ids)
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=32, GROUP_SIZE_M=1)
    out = mj.fused_experts_jit(x, w1, w2, w, ids, config=cfg)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_fused_experts_expert_map_and_topk_router():
    M, E_global, topk, H, N = 9, 8, 2, 64, 32
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(M, H, generator=gen).half()
    logits = torch.randn(M, E_global, generator=gen).half()
    w, ids = mj.topk_softmax(logits, topk, renormalize=True)
    emap = torch.tensor([-1, 0, -1, 1, 2, -1, 3, -1], dtype=torch.int32)
    w1 = (torch.randn(4, 2 * N, H, generator=gen) / H ** 0.5).half()
    w2 = (torch.randn(4, H, N, generator=gen) / N ** 0.5).half()
    ref = ref_fused_experts(x, w1, w2, w, ids, emap.long()[ids.long()])
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=32, GROUP_SIZE_M=1)
    out = mj.fused_experts_jit(x, w1, w2, w, ids, expert_map=emap, config=cfg, align_path="general")
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("quant", [mj.QUANT_FP8_TENSOR, mj.QUANT_FP8_BLOCK])
def test_fused_experts_fp8(quant):
    M, E, topk, H, N = 5, 4, 2, 256, 128
    gen = torch.Generator().manual_seed(30 + quant)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, H, generator=gen).half()
    w1 = torch.randn(E, 2 * N, H, generator=gen) / H ** 0.5
    w2 = torch.randn(E, H, N, generator=gen) / N ** 0.5
    if quant == mj.QUANT_FP8_TENSOR:
        s1, s2 = w1.abs().amax((1, 2)) / 448.0, w2.abs().amax((1, 2)) / 448.0
        q1, q2 = (w1 / s1[:, None, None]).to(FP8), (w2 / s2[:, None, None]).to(FP8)
        d1, d2 = q1.double() * s1.double()[:, None, None], q2.double() * s2.double()[:, None, None]
    else:
        (q1, s1), (q2, s2) = quant_weight_block(w1), quant_weight_block(w2)
        d1, d2 = dequant_weight_block(q1, s1), dequant_weight_block(q2, s2)
    ref = ref_fused_experts(x, d1, d2, w, ids)
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=64, BLOCK_SIZE_K=128, GROUP_SIZE_M=1)
    out = mj.fused_experts_jit(x, q1, q2, w, ids, quant=quant, w1_scale=s1, w2_scale=s2, config=cfg)
    # Activations are quantized too: fp8 (3 mantissa bits) error, relative to the output scale.
    err = (out.double() - ref).abs().max() / ref.abs().max()
    assert err < 0.08, err
