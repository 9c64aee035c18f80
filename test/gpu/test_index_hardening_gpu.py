"""Index inputs from user data never move a kernel outside its tensors (GPU,
through the AOT operators). Run under compute-sanitizer memcheck as well.

Every output is a view into a larger buffer poisoned with a sentinel: guard
entries must keep it, rows the documented contract writes must lose it, the
others must keep it. Inputs sit between guards holding large values that
would show up in the results if read.
  - varlen cu_seqlens out of range / decreasing / longer than max_seqlen:
    tritonsrc/flash/seq_bounds.py (clamped into [0, total], length capped at
    max_seqlen, rows outside every sequence untouched);
  - dropout: heads draw different masks even when max_seqlen_q * max_seqlen_k
    reaches 2^32 (64-bit Philox counter, head in its own counter word);
  - MoE: expert_map shorter than the local experts is refused; ids past the
    map are skipped; grouped_gemm expert ids outside [0, E) write zeros and
    negative slot ids nothing; topk_softmax with NaN / +-inf logits writes
    every entry (ids in range, finite weights).
"""
import math

import pytest
import torch

from test_moe_fused_gpu import aot  # a functional the build's profile lacks (e.g. moetest) skips the test
from varlen_bounds_ref import seq_bounds

DEV = "cuda"
G = 64          # guard rows
SENT = -777.0   # output poison (exact in fp16)


def _aot():
    import aotriton
    from aotriton._glue import stream_of, view

    def launch_env(t):
        """(raw stream of t's device, a guard making that device current)."""
        return stream_of(t), torch.cuda.device(t.get_device())
    return aotriton, aotriton._C, view, launch_env


def guarded(rows, heads, d, fill, dtype=torch.float16):
    st = torch.full((rows + 2 * G, heads, d), fill, dtype=dtype, device=DEV)
    return st, st[G:G + rows]


def guarded_stats(heads, total):
    st = torch.full((heads, total + 2 * G), SENT, dtype=torch.float32, device=DEV)
    return st, st[:, G:G + total]


def written_rows(bounds, total):
    rows = torch.zeros(total, dtype=torch.bool, device=DEV)
    for s, n in bounds:
        rows[s:s + n] = True
    return rows


def check_rows(storage, rows, what):
    n = rows.numel()
    assert (storage[:G] == SENT).all() and (storage[G + n:] == SENT).all(), f"{what}: guard written"
    inner = storage[G:G + n]
    assert (inner[~rows] == SENT).all(), f"{what}: a row outside every sequence was written"
    assert not (inner[rows] == SENT).any(), f"{what}: a row of a sequence was not written"


def ref_attn(q, k, v, scale, causal):
    """q (Sq, Hq, D), k/v (Sk, Hk, D) -> float64 o (Sq, Hq, D), lse (Hq, Sq); bottom-right causal."""
    hq, hk = q.shape[1], k.shape[1]
    q, k, v = (t.transpose(0, 1).double() for t in (q, k, v))
    k, v = k.repeat_interleave(hq // hk, 0), v.repeat_interleave(hq // hk, 0)
    s = q @ k.transpose(-1, -2) * scale
    sq, sk = s.shape[-2:]
    if causal:
        i = torch.arange(sq, device=DEV)[:, None]
        j = torch.arange(sk, device=DEV)[None, :]
        s = s.masked_fill(j > i + sk - sq, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
    return (p @ v).transpose(0, 1), lse


H, HK, D = 4, 2, 64
# (cu_q, cu_k, total_q, total_k, max_q, max_k)
CASES = {
    "past_the_end": ([0, 70, 300 + 5000], [0, 90, 260 + 100000], 300, 260, 512, 512),
    "negative": ([-100000, 100, 300], [-7, 120, 260], 300, 260, 512, 512),
    "decreasing": ([0, 100, 50, 30], [0, 80, 260, 20], 300, 260, 512, 512),
    "longer_than_max": ([0, 250, 300], [0, 200, 260], 300, 260, 64, 100),
    "int32_extremes": ([-2**31, 120, 2**31 - 1, 200], [0, 2**31 - 1, 5, 260], 300, 260, 512, 512),
}


def run_fwd(q, k, v, cu_q, cu_k, mq, mk, causal, out, lse, dropout_p=0.0, philox=None, mask=None):
    aotriton, C, view, launch_env = _aot()
    cq = torch.tensor(cu_q, dtype=torch.int32, device=DEV)
    ck = torch.tensor(cu_k, dtype=torch.int32, device=DEV)
    seed_ptr, off_ptr = (philox[0].data_ptr(), philox[1].data_ptr()) if philox is not None else (0, 0)
    stream, guard = launch_env(q)
    with guard:
        aot(C.attn_fwd_varlen, view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"),
            cq.data_ptr(), ck.data_ptr(), len(cu_q) - 1, mq, mk, 1 / 8, 2 if causal else 0,
            float(dropout_p), seed_ptr, off_ptr, view(mask, "mask") if mask is not None else None, stream, None)
    torch.cuda.synchronize()
    return cq, ck


def inputs(tq, tk, seed):
    torch.manual_seed(seed)
    q = guarded(tq, H, D, 300.0)[1]
    k = guarded(tk, HK, D, 300.0)[1]
    v = guarded(tk, HK, D, 300.0)[1]
    for t in (q, k, v):
        t.copy_(torch.randn_like(t))
    return q, k, v


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_forward_bad_cu_seqlens(case, causal):
    cu_q, cu_k, tq, tk, mq, mk = CASES[case]
    q, k, v = inputs(tq, tk, seed=len(case) + causal)
    os_, out = guarded(tq, H, D, SENT)
    ls, lse = guarded_stats(H, tq)
    run_fwd(q, k, v, cu_q, cu_k, mq, mk, causal, out, lse)
    bq, bk = seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk)
    rows = written_rows(bq, tq)
    check_rows(os_, rows, "out")
    check_rows(ls.t(), rows, "lse")
    for (s, n), (sk, nk) in zip(bq, bk):
        if n == 0:
            continue
        ro, rl = ref_attn(q[s:s + n], k[sk:sk + nk], v[sk:sk + nk], 1 / 8, causal)
        assert (out[s:s + n].double() - ro).abs().max() < 1e-2
        fin = torch.isfinite(rl)
        assert torch.equal(torch.isfinite(lse[:, s:s + n]), fin)
        if fin.any():
            assert (lse[:, s:s + n].double() - rl)[fin].abs().max() < 1e-2


@pytest.mark.parametrize("case", list(CASES))
def test_varlen_backward_bad_cu_seqlens(case):
    aotriton, C, view, launch_env = _aot()
    cu_q, cu_k, tq, tk, mq, mk = CASES[case]
    q, k, v = inputs(tq, tk, seed=7 * len(case))
    out = torch.zeros(tq, H, D, dtype=torch.float16, device=DEV)
    lse = torch.zeros(H, tq, dtype=torch.float32, device=DEV)
    cq, ck = run_fwd(q, k, v, cu_q, cu_k, mq, mk, True, out, lse)
    lse = torch.nan_to_num(lse, neginf=0.0)  # rows that see no key: any finite value works
    do = guarded(tq, H, D, 300.0)[1]
    do.copy_(torch.randn_like(do))
    dqs, dq = guarded(tq, H, D, SENT)
    dks, dk = guarded(tk, HK, D, SENT)
    dvs, dv = guarded(tk, HK, D, SENT)
    ds, delta = guarded_stats(H, tq)
    args = [view(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (do, "dout"), (lse, "lse"),
                                    (dq, "dq"), (dk, "dk"), (dv, "dv"), (delta, "delta"))]
    stream, guard = launch_env(q)
    with guard:
        aot(C.attn_bwd_varlen, *args, cq.data_ptr(), ck.data_ptr(), len(cu_q) - 1, mq, mk, 1 / 8, 2, 0.0, 0, 0,
            stream, None)
    torch.cuda.synchronize()
    bq, bk = seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk)
    qrows, krows = written_rows(bq, tq), written_rows(bk, tk)
    check_rows(dqs, qrows, "dq")
    check_rows(ds.t(), qrows, "delta")
    check_rows(dks, krows, "dk")
    check_rows(dvs, krows, "dv")
    for (s, n), (sk, nk) in zip(bq, bk):
        if n == 0 or nk == 0:
            continue
        qq, kk, vv = (t.double().requires_grad_() for t in (q[s:s + n], k[sk:sk + nk], v[sk:sk + nk]))
        o, _ = ref_attn(qq, kk, vv, 1 / 8, True)
        o.backward(do[s:s + n].double())
        for got, want, name in ((dq[s:s + n], qq.grad, "dq"), (dk[sk:sk + nk], kk.grad, "dk"),
                                (dv[sk:sk + nk], vv.grad, "dv")):
            err = (got.double() - want).abs().max() / want.abs().max().clamp_min(1e-3)
            assert err < 2e-2, (name, err.item())


def test_varlen_dropout_mask_stays_in_its_buffer():
    aotriton, C, view, launch_env = _aot()
    cu_q, cu_k, tq, tk, mq, mk = CASES["longer_than_max"]
    q, k, v = inputs(tq, tk, seed=9)
    ms = torch.full((4, H, mq, mk), 9, dtype=torch.int8, device=DEV)
    mask = ms[1:3]
    out = torch.zeros(tq, H, D, dtype=torch.float16, device=DEV)
    lse = torch.zeros(H, tq, dtype=torch.float32, device=DEV)
    philox = aotriton.philox_state(q.device, seed=5, offset=0)
    run_fwd(q, k, v, cu_q, cu_k, mq, mk, False, out, lse, dropout_p=0.3, philox=philox, mask=mask)
    assert (ms[0] == 9).all() and (ms[3] == 9).all(), "mask guard written"
    for b, ((s, n), (sk, nk)) in enumerate(zip(seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk))):
        assert ((mask[b, :, :n, :nk] == 0) | (mask[b, :, :n, :nk] == 1)).all()
        assert (mask[b, :, n:] == 9).all() and (mask[b, :, :, nk:] == 9).all()


def test_dropout_heads_differ_when_plane_reaches_2_pow_32():
    # Two heads with identical q/k/v and max_seqlen 65536 x 65536: the old
    # 32-bit RNG index gave head 1 exactly head 0's mask, so equal outputs.
    aotriton, C, view, launch_env = _aot()
    torch.manual_seed(2)
    n = 128
    q1, k1, v1 = (torch.randn(n, 1, D, dtype=torch.float16, device=DEV) for _ in range(3))
    q, k, v = (t.expand(n, 2, D).contiguous() for t in (q1, k1, v1))
    out = torch.full((n, 2, D), SENT, dtype=torch.float16, device=DEV)
    lse = torch.zeros(2, n, dtype=torch.float32, device=DEV)
    philox = aotriton.philox_state(q.device, seed=11, offset=0)
    run_fwd(q, k, v, [0, n], [0, n], 1 << 16, 1 << 16, False, out, lse, dropout_p=0.5, philox=philox)
    assert not (out == SENT).any()
    assert torch.equal(lse[0], lse[1]), "same inputs, same lse (dropout does not touch it)"
    assert not torch.equal(out[:, 0], out[:, 1]), "heads must draw different dropout masks"


# --------------------------------------------------------------------- MoE
def test_topk_softmax_non_finite_logits_write_everything():
    aotriton, *_ = _aot()
    E, topk, M = 64, 4, 37
    torch.manual_seed(4)
    x = torch.randn(M, E, device=DEV)
    x[1, 5] = float("nan")
    x[2] = float("nan")
    x[3, 7] = float("inf")
    x[4, 9] = float("inf")
    x[4, 60] = float("inf")
    x[5] = float("-inf")
    x[6, :10] = float("-inf")
    x[7, 0], x[7, 1] = float("inf"), float("nan")
    for dtype in (torch.float32, torch.float16):
        w = torch.full((M, topk), float("nan"), dtype=torch.float32, device=DEV)
        ids = torch.full((M, topk), -7, dtype=torch.int32, device=DEV)
        aotriton.topk_softmax(x.to(dtype), topk, True, topk_weights=w, topk_ids=ids)
        assert ((ids >= 0) & (ids < E)).all() and torch.isfinite(w).all()
        assert all(len(set(r)) == topk for r in ids.tolist())
        assert ids[2].tolist() == [0, 1, 2, 3] and ids[5].tolist() == [0, 1, 2, 3], "uniform rows: lowest ids"
        assert ids[4, :2].tolist() == [9, 60] and torch.allclose(w[4, :2], torch.full((2,), 0.5, device=DEV))
        assert ids[3, 0].item() == 7 and ids[7, 0].item() == 0
        assert torch.allclose(w.sum(1), torch.ones(M, device=DEV), atol=1e-5)


def test_align_expert_map_length_and_ids_past_it():
    aotriton, *_ = _aot()
    E_global, E_local = 16, 6
    storage = torch.zeros(E_global + 64, dtype=torch.int32, device=DEV)  # guard entries: local 0
    emap = storage[:E_global]
    emap.fill_(-1)
    emap[torch.tensor([1, 4, 6, 9, 12, 15])] = torch.arange(E_local, dtype=torch.int32, device=DEV)
    torch.manual_seed(6)
    for M in (20, 700):  # the one-launch and the four-launch paths
        ids = torch.randint(0, E_global, (M, 2), dtype=torch.int32, device=DEV)
        bad = torch.rand(M, 2, device=DEV) < 0.2
        ids[bad] = torch.randint(E_global, E_global + 60, (int(bad.sum()),), dtype=torch.int32, device=DEV)
        ids[0, 0] = 2**31 - 1
        clean = torch.where((ids >= 0) & (ids < E_global), ids, -1)
        got = aotriton.moe_align_block_size(ids, 16, E_local, emap)
        want = aotriton.moe_align_block_size(clean, 16, E_local, emap)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    with pytest.raises(ValueError, match="expert_map"):
        aotriton.moe_align_block_size(ids, 16, E_local, emap[:E_local - 1])


def test_grouped_gemm_bad_expert_and_slot_ids():
    aotriton, *_ = _aot()
    M, topk, E, N, K = 200, 2, 8, 128, 256
    torch.manual_seed(8)
    ids = torch.stack([torch.randperm(E, device=DEV)[:topk] for _ in range(M)]).to(torch.int32)
    a = (torch.randn(M, K, device=DEV) / K ** 0.5).half()
    storage = torch.ones(E + 4, N, K, dtype=torch.float16, device=DEV)  # guard experts: ones
    b = storage[2:2 + E]
    b.copy_(torch.randn(E, N, K, device=DEV).half())
    bs = aotriton.moe_gemm_block_size(M)
    s, e, n = aotriton.moe_align_block_size(ids, bs, E)
    nblocks = int(n[0]) // bs
    e2, s2 = e.clone(), s.clone()
    e2[0], e2[1], e2[2] = E, -2, 2**31 - 1
    victim = int(s2[bs * 3])
    s2[bs * 3] = -1
    c_full = torch.full((M * topk + 2, N), float("nan"), dtype=torch.float16, device=DEV)
    c = c_full[1:1 + M * topk]
    aotriton.invoke_fused_moe_kernel(a, b, c, None, s2, e2, n, topk, bs)
    torch.cuda.synchronize()
    assert torch.isnan(c_full[0]).all() and torch.isnan(c_full[-1]).all(), "guard row of c written"
    slots = s2[:bs * nblocks].reshape(nblocks, bs)
    for blk in range(nblocks):
        rows = slots[blk][(slots[blk] >= 0) & (slots[blk] < M * topk)].long()
        if blk < 3:
            assert (c[rows] == 0).all(), f"block {blk}: bad expert id must give zeros"
            continue
        want = a.double()[rows // topk] @ b[int(e2[blk])].double().T
        assert (c[rows].double() - want).abs().max() < 2e-2
    assert torch.isnan(c[victim]).all()


def test_fused_experts_out_of_range_ids_contribute_zero():
    aotriton, *_ = _aot()
    M, topk, E, N, K = 64, 2, 8, 128, 256
    torch.manual_seed(10)
    x = (torch.randn(M, K, device=DEV) / 4).half()
    w1 = (torch.randn(E, 2 * N, K, device=DEV) / K ** 0.5).half()
    w2 = (torch.randn(E, K, N, device=DEV) / N ** 0.5).half()
    ids = torch.randint(0, E, (M, topk), dtype=torch.int32, device=DEV)
    tw = torch.rand(M, topk, device=DEV)
    bad = ids.clone()
    bad[::3, 0] = E + 3
    bad[1::5, 1] = -9
    out_bad = aotriton.fused_experts(x, w1, w2, tw, bad)
    keep = ((bad >= 0) & (bad < E)).float()
    out_ref = aotriton.fused_experts(x, w1, w2, tw * keep, ids)  # same experts, zero weight for the bad ones
    assert torch.isfinite(out_bad).all()
    assert (out_bad.float() - out_ref.float()).abs().max() < 2e-2
