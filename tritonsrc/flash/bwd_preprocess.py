"""Flash attention backward, step 1: Delta = rowsum(dO * O) in float32.

With ZERO_DQ_ACC it also zeroes the fp32 dQ accumulator that sm_90's
dQ-by-atomics path sums into (bwd_hopper.py FUSE_DQ), so it needs no memset.

Constexprs
  FUNCTIONAL (must match the call):
    BLOCK_DMODEL   16, 32, 64, 128, 256: power-of-two bucket >= head_dim
    PADDED_HEAD    head_dim != BLOCK_DMODEL (masks the d axis)
    IS_VARLEN      rows given by cu_seqlens_q
    ZERO_DQ_ACC    also write zeros to DQA (the atomic dQ path)
    (plus the element type of O/dO: fp16, bf16 or fp32)
  TUNING:
    BLOCK_M        rows per program (power of two >= 16)
    num_warps, num_stages (launch options)

Grid: (cdiv(max_seqlen_q, BLOCK_M), batch * num_heads_q, 1).

Suggested defaults (memory bound, any arch): BLOCK_M = 128, num_warps = 4,
num_stages = 1 (D = 256: BLOCK_M = 64).

AOT signature hints: as bwd_dkdv (O/dO strides and, with PADDED_HEAD,
head_dim need a divisibility hint or the loads go scalar).
"""
import triton
import triton.language as tl

from .seq_bounds import sequence_bounds


@triton.jit
def bwd_preprocess(
    O, DO, Delta, DQA, cu_seqlens_q,
    stride_oz, stride_oh, stride_om,
    stride_doz, stride_doh, stride_dom,
    stride_delta_z, stride_delta_h,
    stride_dqa_z, stride_dqa_h, stride_dqa_m,
    num_heads_q, max_seqlen_q, head_dim, total_q,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, IS_VARLEN: tl.constexpr,
    ZERO_DQ_ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Delta[b, h, m] = sum_d dO[b, m, h, d] * O[b, m, h, d] (float32).

    O, DO        element pointers (fp16/bf16/fp32), last dim contiguous:
                 (b, m, h, d) at ptr + b*stride_z + h*stride_h + m*stride_m + d.
                 Varlen: stride_*z = 0, row m of sequence b is global row
                 cu_seqlens_q[b] + m.
    Delta        *fp32, Delta + b*stride_delta_z + h*stride_delta_h + row,
                 row = m (batched) or cu_seqlens_q[b] + m (varlen,
                 stride_delta_z = 0): the LSE layout.
    DQA          *fp32 dQ accumulator, Q's layout with its own strides
                 (ZERO_DQ_ACC only; else any pointer, strides 0).
    cu_seqlens_q *i32 [batch + 1] (varlen only, else any pointer).
    num_heads_q  query heads (splits program_id(1) into batch and head).
    max_seqlen_q batched: the query length; varlen: the longest one (grid;
                 longer sequences are cut to it, seq_bounds.py).
    head_dim     runtime head size <= BLOCK_DMODEL.
    total_q      varlen: rows of the packed O/dO/Delta (cu_seqlens_q is
                 clamped into them, seq_bounds.py); batched: ignored.
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    q_start, seqlen_q = sequence_bounds(cu_seqlens_q, off_z, total_q, max_seqlen_q, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= seqlen_q:
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    m_ok = offs_m < seqlen_q
    mask = m_ok[:, None]
    if PADDED_HEAD:
        mask = mask & (offs_d < head_dim)[None, :]

    # 64-bit base offsets; in-sequence offsets stay 32-bit.
    o_base = O + off_z.to(tl.int64) * stride_oz + off_h.to(tl.int64) * stride_oh
    do_base = DO + off_z.to(tl.int64) * stride_doz + off_h.to(tl.int64) * stride_doh
    if IS_VARLEN:
        o_base += q_start.to(tl.int64) * stride_om
        do_base += q_start.to(tl.int64) * stride_dom
    o = tl.load(o_base + offs_m[:, None] * stride_om + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_dom + offs_d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)

    d_ptrs = Delta + off_z.to(tl.int64) * stride_delta_z + off_h.to(tl.int64) * stride_delta_h \
        + q_start + offs_m
    tl.store(d_ptrs, delta, mask=m_ok)

    if ZERO_DQ_ACC:
        a_base = DQA + off_z.to(tl.int64) * stride_dqa_z + off_h.to(tl.int64) * stride_dqa_h
        if IS_VARLEN:
            a_base += q_start.to(tl.int64) * stride_dqa_m
        tl.store(a_base + offs_m[:, None] * stride_dqa_m + offs_d[None, :],
                 tl.zeros([BLOCK_M, BLOCK_DMODEL], dtype=tl.float32), mask=mask)
