"""The dropout keep mask of a flash forward call, regenerated on its own.

The forward does not write its mask (a debug output would double its
dropout functionals); this kernel draws the same Philox numbers from the
same seed/offset (dropout.keep_mask, the function the forward and backward
call with the same (bh, row, column)), so its mask is the one the forward
used. Launched after the forward on the same stream when a caller asks for
the mask (return_dropout_mask / flash-attn's return_attn_probs).

Grid: (cdiv(max_seqlen_q, BLOCK_M), num_seqs * num_heads_q, 1).
"""
import triton
import triton.language as tl

from .dropout import keep_mask
from .seq_bounds import sequence_bounds


@triton.jit(do_not_specialize=["num_heads_q", "max_seqlen_q", "max_seqlen_k", "total_q", "total_k"])
def attn_dropout_mask(
    philox_seed_ptr, philox_offset_ptr, dropout_mask, cu_seqlens_q, cu_seqlens_k,
    dropout_p, stride_mz, stride_mh, stride_mm,
    num_heads_q, max_seqlen_q, max_seqlen_k, total_q, total_k,
    IS_VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dropout_mask[b, h, m, n] = 1 where the forward kept element (m, n) of
    sequence b, head h, else 0 (int8; (b, h, m, n) at b*stride_mz +
    h*stride_mh + m*stride_mm + n). Written for every in-sequence (m, n)
    (sequence bounds as in the forward: seq_bounds.py), causal-hidden ones
    included; entries past a sequence's length are left untouched."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    _, seqlen_q = sequence_bounds(cu_seqlens_q, off_z, total_q, max_seqlen_q, IS_VARLEN)
    _, seqlen_k = sequence_bounds(cu_seqlens_k, off_z, total_k, max_seqlen_k, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= seqlen_q:
        return
    seed = tl.load(philox_seed_ptr)
    philox_offset = tl.load(philox_offset_ptr)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    m_ok = offs_m < seqlen_q
    base = dropout_mask + off_z.to(tl.int64) * stride_mz + off_h.to(tl.int64) * stride_mh
    for start_n in tl.range(0, seqlen_k, BLOCK_N):
        cols = start_n + offs_n
        keep = keep_mask(seed, philox_offset, bh, offs_m, cols, max_seqlen_q, max_seqlen_k, dropout_p)
        ptrs = base + offs_m[:, None] * stride_mm + cols[None, :]
        tl.store(ptrs, keep.to(tl.int8), mask=m_ok[:, None] & (cols < seqlen_k)[None, :])
