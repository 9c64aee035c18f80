"""Varlen flash kernels with bad cu_seqlens (interpreter): nothing outside the
tensors is read or written, and exactly the documented rows are written.

The contract (tritonsrc/flash/seq_bounds.py): sequence b covers rows
[start, start + length) with start = clamp(cu[b], 0, total),
end = clamp(cu[b + 1], start, total), length = min(end - start, max_seqlen);
other rows are left untouched. Every tensor here is a view into a larger
buffer: input guards hold large values that would show up in the results if
read, output guards and outputs hold a sentinel, so a stray write or a row
that should have been written shows as a sentinel mismatch.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import math

import pytest
import torch

from python.jit.flash_bwd import attn_bwd_jit
from python.jit.flash_fwd import attn_fwd_jit
from varlen_bounds_ref import seq_bounds

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
G = 48        # guard rows on each side of every packed tensor
SENT = -777.0  # output poison (exact in fp32)
H, HK, D = 2, 1, 16


def guarded(rows, heads, fill):
    """(storage, view): view = storage[G:G + rows], a packed (rows, heads, D) tensor."""
    st = torch.full((rows + 2 * G, heads, D), fill, dtype=torch.float32)
    return st, st[G:G + rows]


def guarded_stats(total):
    st = torch.full((H, total + 2 * G), SENT, dtype=torch.float32)
    return st, st[:, G:G + total]


def ref_attn(q, k, v, scale, causal_type):
    """q (Sq, H, D), k/v (Sk, HK, D) float64 -> o (Sq, H, D), lse (H, Sq)."""
    q, k, v = (t.transpose(0, 1).double() for t in (q, k, v))
    k, v = k.repeat_interleave(H // HK, 0), v.repeat_interleave(H // HK, 0)
    sq, sk = q.shape[1], k.shape[1]
    s = q @ k.transpose(-1, -2) * scale
    i, j = torch.arange(sq)[:, None], torch.arange(sk)[None, :]
    if causal_type == 1:
        s = s.masked_fill(j > i, -math.inf)
    elif causal_type == 2:
        s = s.masked_fill(j > i + sk - sq, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
    return (p @ v).transpose(0, 1), lse


def inputs(total_q, total_k, seed):
    torch.manual_seed(seed)
    qs, q = guarded(total_q, H, 50.0)
    ks, k = guarded(total_k, HK, 50.0)
    vs, v = guarded(total_k, HK, 50.0)
    for t in (q, k, v):
        t.copy_(torch.randn_like(t))
    return q, k, v


# (cu_q, cu_k, total_q, total_k, max_q, max_k): each hits one class of bad input.
CASES = {
    "past_the_end": ([0, 7, 30 + 25], [0, 9, 26 + 30], 30, 26, 64, 64),
    "negative": ([-20, 10, 30], [-5, 12, 26], 30, 26, 64, 64),
    "decreasing": ([0, 10, 5, 3], [0, 8, 26, 2], 30, 26, 64, 64),
    "longer_than_max": ([0, 25, 30], [0, 20, 26], 30, 26, 8, 12),
    "all_at_once": ([-9, 40, 12, 60], [3, 1, 50, 26], 30, 26, 9, 64),
}


def written_rows(bounds, total):
    rows = torch.zeros(total, dtype=torch.bool)
    for s, n in bounds:
        rows[s:s + n] = True
    return rows


def check_rows(storage, rows, what):
    """Guards and unwritten rows hold SENT exactly; written rows hold none."""
    inner = storage[G:G + rows.numel()]
    assert (storage[:G] == SENT).all() and (storage[G + rows.numel():] == SENT).all(), f"{what}: guard written"
    assert (inner[~rows] == SENT).all(), f"{what}: a row outside every sequence was written"
    assert not (inner[rows] == SENT).any(), f"{what}: a row of a sequence was not written"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("causal_type", [0, 2])
def test_forward(case, causal_type):
    cu_q, cu_k, tq, tk, mq, mk = CASES[case]
    q, k, v = inputs(tq, tk, seed=len(case) + causal_type)
    os_, o = guarded(tq, H, SENT)
    ls, lse = guarded_stats(tq)
    attn_fwd_jit(q, k, v, sm_scale=0.3, causal_type=causal_type,
                 cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32),
                 cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32),
                 max_seqlen_q=mq, max_seqlen_k=mk, config=SMALL, out=o, lse_out=lse)
    bq, bk = seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk)
    rows = written_rows(bq, tq)
    check_rows(os_, rows, "out")
    check_rows(ls.t(), rows, "lse")
    for (s, n), (sk, nk) in zip(bq, bk):
        if n == 0:
            continue
        ro, rl = ref_attn(q[s:s + n], k[sk:sk + nk], v[sk:sk + nk], 0.3, causal_type)
        torch.testing.assert_close(o[s:s + n].double(), ro, atol=2e-5, rtol=2e-5)
        fin = torch.isfinite(rl)
        assert torch.equal(torch.isfinite(lse[:, s:s + n]), fin)
        torch.testing.assert_close(lse[:, s:s + n].double()[fin], rl[fin], atol=2e-5, rtol=2e-5)


def test_forward_dropout_mask_stays_in_its_buffer():
    # A sequence longer than max_seqlen used to write its mask rows past the
    # [num_seqs, H, max_q, max_k] buffer.
    cu_q, cu_k, tq, tk, mq, mk = [0, 25, 30], [0, 20, 26], 30, 26, 8, 12
    q, k, v = inputs(tq, tk, seed=5)
    ms = torch.full((4, H, mq, mk), 9, dtype=torch.int8)
    mask = ms[1:3]
    _, o = guarded(tq, H, SENT)
    _, lse = guarded_stats(tq)
    attn_fwd_jit(q, k, v, sm_scale=0.3, cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32),
                 cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32), max_seqlen_q=mq, max_seqlen_k=mk,
                 dropout_p=0.3, philox_seed=3, philox_offset=0, return_mask=True, config=SMALL,
                 out=o, lse_out=lse, mask_out=mask)
    assert (ms[0] == 9).all() and (ms[3] == 9).all(), "mask guard written"
    for b, ((s, n), (sk, nk)) in enumerate(zip(seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk))):
        assert ((mask[b, :, :n, :nk] == 0) | (mask[b, :, :n, :nk] == 1)).all()
        assert (mask[b, :, n:] == 9).all() and (mask[b, :, :, nk:] == 9).all()


def ref_grads(q, k, v, do, scale, causal_type):
    q, k, v = (t.double().requires_grad_() for t in (q, k, v))
    o, _ = ref_attn(q, k, v, scale, causal_type)
    o.backward(do.double())
    return q.grad, k.grad, v.grad


@pytest.mark.parametrize("case", list(CASES))
def test_backward(case):
    cu_q, cu_k, tq, tk, mq, mk = CASES[case]
    causal_type = 2
    q, k, v = inputs(tq, tk, seed=3 * len(case))
    cq, ck = torch.tensor(cu_q, dtype=torch.int32), torch.tensor(cu_k, dtype=torch.int32)
    o, lse = attn_fwd_jit(q, k, v, sm_scale=0.3, causal_type=causal_type, cu_seqlens_q=cq, cu_seqlens_k=ck,
                          max_seqlen_q=mq, max_seqlen_k=mk, config=SMALL)
    # Rows outside every sequence: what a caller's forward left there (any finite value).
    o = torch.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0)
    lse = torch.nan_to_num(lse, nan=0.0, posinf=0.0, neginf=0.0)
    _, do = guarded(tq, H, 50.0)
    do.copy_(torch.randn_like(do))
    dqs, dq = guarded(tq, H, SENT)
    dks, dk = guarded(tk, HK, SENT)
    dvs, dv = guarded(tk, HK, SENT)
    ds, delta = guarded_stats(tq)
    attn_bwd_jit(do, q, k, v, o, lse, sm_scale=0.3, causal_type=causal_type, cu_seqlens_q=cq, cu_seqlens_k=ck,
                 max_seqlen_q=mq, max_seqlen_k=mk, out=(dq, dk, dv), delta_out=delta)
    bq, bk = seq_bounds(cu_q, tq, mq), seq_bounds(cu_k, tk, mk)
    qrows = written_rows(bq, tq)
    check_rows(dqs, qrows, "dq")
    check_rows(ds.t(), qrows, "delta")
    # dK/dV: every key of a sequence is written (0 when its sequence has no query).
    krows = written_rows(bk, tk)
    check_rows(dks, krows, "dk")
    check_rows(dvs, krows, "dv")
    for (s, n), (sk, nk) in zip(bq, bk):
        if nk == 0:
            assert (dq[s:s + n] == 0).all(), "rows that see no key get dq = 0"
            continue
        if n == 0:
            assert (dk[sk:sk + nk] == 0).all() and (dv[sk:sk + nk] == 0).all()
            continue
        gq, gk, gv = ref_grads(q[s:s + n], k[sk:sk + nk], v[sk:sk + nk], do[s:s + n], 0.3, causal_type)
        torch.testing.assert_close(dq[s:s + n].double(), gq, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(dk[sk:sk + nk].double(), gk, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(dv[sk:sk + nk].double(), gv, atol=1e-4, rtol=1e-4)


def test_extreme_cu_seqlens_values():
    # int32 extremes: clamped like any other out-of-range value.
    big, small = 2**31 - 1, -2**31
    cu_q, cu_k, tq, tk, mq, mk = [small, 12, big, small], [0, big, 5, 26], 30, 26, 64, 64
    q, k, v = inputs(tq, tk, seed=11)
    os_, o = guarded(tq, H, SENT)
    ls, lse = guarded_stats(tq)
    attn_fwd_jit(q, k, v, sm_scale=0.3, cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32),
                 cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32), max_seqlen_q=mq, max_seqlen_k=mk,
                 config=SMALL, out=o, lse_out=lse)
    rows = written_rows(seq_bounds(cu_q, tq, mq), tq)
    check_rows(os_, rows, "out")
    check_rows(ls.t(), rows, "lse")
