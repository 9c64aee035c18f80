"""MoE Triton kernels through the JIT on a CUDA GPU, against float64 torch
references on fresh random data (the fp8 paths and the sizes the interpreter
cannot run). Skipped without a GPU or under TRITON_INTERPRET=1.

Run alone: pytest test/gpu/test_moe_kernels_jit_gpu.py (not in the same
process as test/cpu/test_moe_interp.py, which sets TRITON_INTERPRET=1).
"""
import os

import pytest
import torch
from fp8_check import assert_fp8_close

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs a CUDA GPU and the real Triton JIT")

from python.jit import moe as mj  # noqa: E402

FP8 = torch.float8_e4m3fn
DEV = "cuda"


def fp8_ok():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


# ---------------------------------------------------------------- references
def ref_topk_softmax(logits, topk, renormalize):
    p = torch.softmax(logits.double(), dim=-1)
    ids = torch.sort(-p, dim=-1, stable=True).indices[:, :topk]
    w = torch.gather(p, 1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    return w, ids


def ref_align(topk_ids, block_size, num_experts, expert_map=None):
    flat = topk_ids.reshape(-1).long().cpu()
    numel = flat.numel()
    local = expert_map.long().cpu()[flat] if expert_map is not None else flat
    order = torch.sort(torch.where(local >= 0, local, num_experts) * numel + torch.arange(numel)).indices
    counts = torch.bincount(local[local >= 0], minlength=num_experts)
    sorted_ids, expert_ids, pos = [], [], 0
    for e in range(num_experts):
        c = int(counts[e])
        if c:
            nblk = -(-c // block_size)
            sorted_ids.append(order[pos:pos + c])
            sorted_ids.append(torch.full((nblk * block_size - c,), numel))
            expert_ids += [e] * nblk
            pos += c
    max_padded = numel + num_experts * (block_size - 1)
    s = torch.cat(sorted_ids + [torch.empty(0, dtype=torch.long)])
    total = s.numel()
    s = torch.cat([s, torch.full((max_padded - total,), numel)]).to(torch.int32)
    nblocks = -(-max_padded // block_size)
    e = torch.tensor(expert_ids + [-1] * (nblocks - len(expert_ids)), dtype=torch.int32)
    return s, e, total


def ref_grouped_gemm(a, b, topk_ids, top_k_rows, weights=None):
    flat = topk_ids.reshape(-1).long()
    out = torch.empty(flat.numel(), b.shape[1], dtype=torch.float64, device=a.device)
    a64 = a.double()
    for e in flat.unique().tolist():
        s = (flat == e).nonzero().flatten()
        out[s] = a64[s // top_k_rows] @ b[e].double().T
    if weights is not None:
        out *= weights.reshape(-1, 1).double()
    return out


def ref_fused_experts(x, w1, w2, topk_weights, local_ids):
    n = w1.shape[1] // 2
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float64, device=x.device)
    x64 = x.double()
    for e in local_ids.unique().tolist():
        if e < 0:
            continue
        m, k = (local_ids == e).nonzero(as_tuple=True)
        h = x64[m] @ w1[e].double().T
        act = torch.nn.functional.silu(h[:, :n]) * h[:, n:]
        out.index_add_(0, m, topk_weights[m, k].double()[:, None] * (act @ w2[e].double().T))
    return out


def routing(M, E, topk, gen):
    scores = torch.rand(M, E, generator=gen)
    ids = scores.topk(topk, dim=-1).indices.to(torch.int32)
    w = torch.rand(M, topk, generator=gen) + 0.1
    return (w / w.sum(-1, keepdim=True)).to(DEV), ids.to(DEV)


def quant_weight_block(w):
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


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("E,topk", [(8, 2), (60, 4), (128, 8), (256, 8), (512, 6)])
@pytest.mark.parametrize("renormalize", [False, True])
def test_topk_softmax(dtype, E, topk, renormalize):
    torch.manual_seed(E + topk)
    logits = (torch.randn(777, E, device=DEV) * 2).to(dtype)
    w, ids = mj.topk_softmax(logits, topk, renormalize)
    rw, rids = ref_topk_softmax(logits, topk, renormalize)
    assert torch.equal(ids.long(), rids)
    torch.testing.assert_close(w.double(), rw, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("M,E,topk,bs", [(1, 8, 2, 16), (64, 128, 8, 16), (100, 512, 8, 16),
                                         (4096, 256, 8, 64), (3000, 8, 2, 128)])
@pytest.mark.parametrize("with_map", [False, True])
def test_align(M, E, topk, bs, with_map):
    gen = torch.Generator().manual_seed(M + E)
    _, ids = routing(M, E, topk, gen)
    emap, n_local = None, E
    if with_map:
        perm = torch.randperm(E, generator=gen)
        n_local = E // 2
        emap = torch.full((E,), -1, dtype=torch.int32)
        emap[perm[:n_local]] = torch.arange(n_local, dtype=torch.int32)
        emap = emap.to(DEV)
    rs, re, total = ref_align(ids, bs, n_local, emap)
    paths = ["general"] + (["small"] if ids.numel() <= 1024 else [])
    for path in paths:
        s, e, n = mj.moe_align_block_size(ids, bs, n_local, emap, path=path)
        assert int(n.item()) == total, path
        assert torch.equal(s.cpu(), rs), path
        assert torch.equal(e.cpu(), re), path


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,E,N,K", [(1, 8, 512, 256), (64, 8, 384, 512), (300, 16, 256, 511),
                                     (1000, 8, 1024, 768)])
@pytest.mark.parametrize("mul_w", [False, True])
def test_grouped_gemm(dtype, M, E, N, K, mul_w):
    topk = 2
    gen = torch.Generator().manual_seed(M + N + K)
    w, ids = routing(M, E, topk, gen)
    a = (torch.randn(M, K, generator=gen) / K ** 0.5).to(DEV, dtype)
    b = torch.randn(E, N, K, generator=gen).to(DEV, dtype)
    ref = ref_grouped_gemm(a, b, ids, topk, w if mul_w else None)
    aligned = K % 16 == 0
    cfg = {k: v for k, v in mj.default_config(M, aligned=aligned).items()}
    s, e, n = mj.moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], E)
    c = torch.full((M * topk, N), float("nan"), dtype=dtype, device=DEV)
    mj.invoke_grouped_gemm(a, b, c, w if mul_w else None, s, e, n, topk, cfg, mul_routed_weight=mul_w)
    tol = 2e-2 if dtype == torch.float16 else 6e-2
    torch.testing.assert_close(c.double(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("cfg_index", range(len(mj.SWEEP_CANDIDATES)))
def test_grouped_gemm_sweep_candidates(cfg_index):
    """Every sweep candidate compiles, runs and is right (fp16, K and N tails)."""
    M, E, topk, N, K = 200, 8, 2, 336, 400
    gen = torch.Generator().manual_seed(cfg_index)
    w, ids = routing(M, E, topk, gen)
    a = (torch.randn(M, K, generator=gen) / K ** 0.5).to(DEV, torch.float16)
    b = torch.randn(E, N, K, generator=gen).to(DEV, torch.float16)
    cfg = dict(mj.SWEEP_CANDIDATES[cfg_index])
    s, e, n = mj.moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], E)
    c = torch.full((M * topk, N), float("nan"), dtype=torch.float16, device=DEV)
    mj.invoke_grouped_gemm(a, b, c, w, s, e, n, topk, cfg, mul_routed_weight=True)
    torch.testing.assert_close(c.double(), ref_grouped_gemm(a, b, ids, topk, w), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not fp8_ok(), reason="fp8 e4m3 needs sm_89+")
@pytest.mark.parametrize("M,K", [(1, 128), (33, 4096), (300, 1000)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quant(M, K, dtype):
    torch.manual_seed(M + K)
    x = (torch.randn(M, K, device=DEV) * torch.rand(M, 1, device=DEV) * 10).to(dtype)
    if M > 1:
        x[0, :min(K, 128)] = 0  # an all-zero group
    q, s = mj.per_token_group_quant_fp8(x)
    xp = torch.nn.functional.pad(x.float(), (0, (-K) % 128)).reshape(M, -1, 128)
    rs = xp.abs().amax(-1).clamp(min=1e-10) / 448.0
    torch.testing.assert_close(s, rs, rtol=2e-7, atol=0)  # IEEE vs torch's reciprocal-multiply: 1 ulp
    rq = (xp / s[..., None]).clamp(-448, 448).to(FP8).reshape(M, -1)[:, :K]
    assert_fp8_close(q, rq)
    scale = torch.tensor([x.float().abs().max().item() / 400.0], device=DEV)
    qt = mj.per_tensor_quant_fp8(x, scale)
    assert_fp8_close(qt, (x.float() / scale).clamp(-448, 448).to(FP8))


@pytest.mark.skipif(not fp8_ok(), reason="fp8 e4m3 needs sm_89+")
@pytest.mark.parametrize("quant", [mj.QUANT_FP8_TENSOR, mj.QUANT_FP8_BLOCK])
@pytest.mark.parametrize("M,N,K", [(1, 256, 512), (64, 384, 1024), (700, 512, 640), (40, 200, 300)])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_grouped_gemm_fp8(quant, M, N, K, out_dtype):
    E, topk = 8, 2
    gen = torch.Generator().manual_seed(quant * 1000 + M)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, out_dtype)
    b = (torch.randn(E, N, K, generator=gen) / K ** 0.5).to(DEV)
    if quant == mj.QUANT_FP8_TENSOR:
        a_s = (x.float().abs().max() / 448.0).reshape(1)
        a_q = mj.per_tensor_quant_fp8(x, a_s)
        b_s = b.abs().amax((1, 2)) / 448.0
        b_q = (b / b_s[:, None, None]).to(FP8)
        a_deq = a_q.double() * a_s.double()
        b_deq = b_q.double() * b_s.double()[:, None, None]
    else:
        a_q, a_s = mj.per_token_group_quant_fp8(x)
        b_q, b_s = quant_weight_block(b)
        a_deq = a_q.double() * a_s.double().repeat_interleave(128, 1)[:, :K]
        b_deq = dequant_weight_block(b_q, b_s)
    aligned = K % 16 == 0 and N % 16 == 0
    cfg = mj.default_config(M, quant, aligned)
    s, e, n = mj.moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], E)
    c = torch.full((M * topk, N), float("nan"), dtype=out_dtype, device=DEV)
    mj.invoke_grouped_gemm(a_q, b_q, c, w, s, e, n, topk, cfg, mul_routed_weight=True,
                           quant=quant, a_scale=a_s, b_scale=b_s)
    ref = ref_grouped_gemm(a_deq, b_deq, ids, topk, w)
    tol = 1e-2 if out_dtype == torch.float16 else 3e-2
    torch.testing.assert_close(c.double(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,E,topk,H,N", [(1, 8, 2, 512, 256), (37, 64, 6, 256, 128),
                                          (512, 8, 2, 1024, 512), (100, 16, 4, 200, 72)])
@pytest.mark.parametrize("with_map", [False, True])
def test_fused_experts(dtype, M, E, topk, H, N, with_map):
    gen = torch.Generator().manual_seed(M + E + H)
    logits = torch.randn(M, E, generator=gen).to(DEV, dtype)
    w, ids = mj.topk_softmax(logits, topk, renormalize=True)
    emap, n_local = None, E
    local = ids.long()
    if with_map:
        n_local = E // 2
        emap = torch.full((E,), -1, dtype=torch.int32)
        emap[torch.randperm(E, generator=gen)[:n_local]] = torch.arange(n_local, dtype=torch.int32)
        emap = emap.to(DEV)
        local = emap.long()[ids.long()]
    x = torch.randn(M, H, generator=gen).to(DEV, dtype)
    w1 = (torch.randn(n_local, 2 * N, H, generator=gen) / H ** 0.5).to(DEV, dtype)
    w2 = (torch.randn(n_local, H, N, generator=gen) / N ** 0.5).to(DEV, dtype)
    out = mj.fused_experts_jit(x, w1, w2, w, ids, expert_map=emap)
    ref = ref_fused_experts(x, w1, w2, w, local)
    tol = 2e-2 if dtype == torch.float16 else 6e-2
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


@pytest.mark.skipif(not fp8_ok(), reason="fp8 e4m3 needs sm_89+")
@pytest.mark.parametrize("quant", [mj.QUANT_FP8_TENSOR, mj.QUANT_FP8_BLOCK])
@pytest.mark.parametrize("M", [1, 64, 400])
def test_fused_experts_fp8(quant, M):
    E, topk, H, N = 8, 2, 1024, 512
    gen = torch.Generator().manual_seed(quant + M)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, H, generator=gen).to(DEV, torch.bfloat16)
    w1 = (torch.randn(E, 2 * N, H, generator=gen) / H ** 0.5).to(DEV)
    w2 = (torch.randn(E, H, N, generator=gen) / N ** 0.5).to(DEV)
    if quant == mj.QUANT_FP8_TENSOR:
        s1, s2 = w1.abs().amax((1, 2)) / 448.0, w2.abs().amax((1, 2)) / 448.0
        q1, q2 = (w1 / s1[:, None, None]).to(FP8), (w2 / s2[:, None, None]).to(FP8)
        d1, d2 = q1.double() * s1.double()[:, None, None], q2.double() * s2.double()[:, None, None]
    else:
        (q1, s1), (q2, s2) = quant_weight_block(w1), quant_weight_block(w2)
        d1, d2 = dequant_weight_block(q1, s1), dequant_weight_block(q2, s2)
    out = mj.fused_experts_jit(x, q1, q2, w, ids, quant=quant, w1_scale=s1, w2_scale=s2)
    ref = ref_fused_experts(x, d1, d2, w, ids.long())
    # Activations are quantized to fp8 too: error relative to the output scale.
    err = (out.double() - ref).abs().max() / ref.abs().max()
    assert err < 0.06, err
