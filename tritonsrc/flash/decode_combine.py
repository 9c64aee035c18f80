"""Reduces the split-KV partial results of attn_decode (decode.py).

One program per output row r = (b * seqlen_q + i) * Hq + h: the partial
outputs O_s (already normalised within their split) and their log-sum-exps
L_s combine as O = sum_s exp(L_s - L) O_s with L = log(sum_s exp(L_s)).
Splits that saw no key carry L_s = -inf and weigh nothing; a row no split
saw gets O = 0, LSE = -inf.

The splits are read BLOCK_S at a time (one [BLOCK_S] LSE load and one
[BLOCK_S, D] partial load per chunk, rescaled online): a loop of one split per
iteration waited for a load round trip per split (128 of them at 128 splits).

Constexprs: FUNCTIONAL dtype (of O), BLOCK_DMODEL (64, 128, 256); BLOCK_S
(splits per chunk) is fixed by the rule.
Grid: (num_seqs * seqlen_q * num_heads_q, 1, 1).
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor


@triton.jit(do_not_specialize=["seqlen_q", "num_heads_q", "head_dim", "total_rows", "num_splits"])
def attn_decode_combine(
    O, LSE, O_part, LSE_part,
    stride_oz, stride_om, stride_oh,
    stride_lse_z, stride_lse_h,
    seqlen_q, num_heads_q, head_dim, total_rows, num_splits,
    BLOCK_DMODEL: tl.constexpr, BLOCK_S: tl.constexpr, USE_PDL: tl.constexpr = False,
):
    """O [B, seqlen_q, Hq, D] (strides z, m, h), LSE fp32 [B, Hq, seqlen_q];
    O_part / LSE_part laid out as attn_decode writes them."""
    wait_for_predecessor(USE_PDL)
    r = tl.program_id(0)
    h = r % num_heads_q
    i = (r // num_heads_q) % seqlen_q
    b = r // (num_heads_q * seqlen_q)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    offs_s = tl.arange(0, BLOCK_S)
    d_ok = offs_d < (head_dim // 8) * 8

    m = tl.full([], float("-inf"), tl.float32)
    l = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([BLOCK_DMODEL], dtype=tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        s_ok = s0 + offs_s < num_splits
        part = (s0 + offs_s).to(tl.int64) * total_rows + r  # split s's row: s * total_rows + r
        x = tl.load(LSE_part + part, mask=s_ok, other=float("-inf"))
        o_s = tl.load(O_part + part[:, None] * head_dim + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :],
                      other=0.0)
        m_new = tl.maximum(m, tl.max(x, 0))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_use)
        # A split with no key wrote O_s = 0 and weighs w = 0 (as do the masked ones).
        w = tl.exp(x - m_use)
        acc = acc * alpha + tl.sum(w[:, None] * o_s, 0)
        l = l * alpha + tl.sum(w, 0)
        m = m_new
    empty = l == 0.0
    out = acc / tl.where(empty, 1.0, l)
    lse = tl.where(empty, float("-inf"), m + tl.log(tl.where(empty, 1.0, l)))
    o_ptrs = O + b.to(tl.int64) * stride_oz + i * stride_om + h * stride_oh + offs_d
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=d_ok)
    tl.store(LSE + b.to(tl.int64) * stride_lse_z + h * stride_lse_h + i, lse)
