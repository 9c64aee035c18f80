"""dQ = sm_scale * DQA in dQ's element type: the last step of the backward
path that adds dQ into an fp32 accumulator with atomics (bwd_hopper.py's
FUSE_DQ on sm_90). Launch
order: bwd_preprocess(ZERO_DQ_ACC=True) -> the dK/dV kernel -> bwd_dq_convert.
Grid (cdiv(max_seqlen_q, BLOCK_M), batch * num_heads_q, 1).
"""
import triton
import triton.language as tl

from .seq_bounds import sequence_bounds


@triton.jit
def bwd_dq_convert(
    DQA, DQ, cu_seqlens_q, sm_scale,
    stride_dqa_z, stride_dqa_h, stride_dqa_m,
    stride_dqz, stride_dqh, stride_dqm,
    num_heads_q, max_seqlen_q, head_dim, total_q,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, IS_VARLEN: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """DQ = sm_scale * DQA in DQ's element type.

    DQA          *fp32 accumulator (strides stride_dqa_*).
    DQ           output (fp16/bf16/fp32), Q's layout with strides stride_dq*;
                 varlen: stride_*z = 0, rows offset by cu_seqlens_q[b].
    cu_seqlens_q *i32 [batch + 1] (varlen only).
    sm_scale     fp32 softmax scale.
    num_heads_q, max_seqlen_q, head_dim  as in bwd_preprocess.
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
    mask = (offs_m < seqlen_q)[:, None]
    if PADDED_HEAD:
        mask = mask & (offs_d < head_dim)[None, :]
    a_base = DQA + off_z.to(tl.int64) * stride_dqa_z + off_h.to(tl.int64) * stride_dqa_h
    o_base = DQ + off_z.to(tl.int64) * stride_dqz + off_h.to(tl.int64) * stride_dqh
    if IS_VARLEN:
        a_base += q_start.to(tl.int64) * stride_dqa_m
        o_base += q_start.to(tl.int64) * stride_dqm
    acc = tl.load(a_base + offs_m[:, None] * stride_dqa_m + offs_d[None, :], mask=mask, other=0.0)
    tl.store(o_base + offs_m[:, None] * stride_dqm + offs_d[None, :],
             (acc * sm_scale).to(DQ.dtype.element_ty), mask=mask)
