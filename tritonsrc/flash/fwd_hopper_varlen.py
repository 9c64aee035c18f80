"""The sm_90 Gluon forward for packed variable-length batches (flash_attn_varlen_func's layout):
Q/O [total_q, Hq, D], K/V [total_k, Hk, D], sequence b at rows [cu_seqlens[b], cu_seqlens[b + 1]).

The body is fwd_hopper.py's serial schedule; only where a program's rows are differs. The TMA
descriptors are the batched kernel's 5-D view with one batch over the whole packed tensor, so a
tile that crosses its sequence's end reads the next sequence's rows (TMA zero-fills only past
the tensor): Q's foreign rows are never stored, K's get -inf scores, and V's are zeroed in shared
memory before P V reads them (fwd_hopper._zero_foreign_rows). The ping-pong schedules share a V
stage between two consumer partitions and are not offered here.

cu_seqlens come from user memory and are clamped as tritonsrc/flash/seq_bounds.py does for the
Triton kernels (a row outside [0, total) is never addressed; a decreasing pair is an empty
sequence; a sequence longer than max_seqlen keeps its first max_seqlen rows).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .fwd_hopper import _ring_barriers, _serial
from .fwd_hopper_common import HALF_ROWS, _head_block, _key_range, _program_head, _swizzle, _tile


@gluon.jit
def _bounds(cu_seqlens, b, total, max_seqlen):
    """(first row, length) of sequence b, clamped (seq_bounds.sequence_bounds' rule)."""
    start = gl.load(cu_seqlens + b)
    end = gl.load(cu_seqlens + b + 1)
    start = gl.minimum(gl.maximum(start, 0), total)
    end = gl.minimum(gl.maximum(end, start), total)
    return start, gl.minimum(end - start, max_seqlen)


@gluon.jit
def attn_fwd_hopper_varlen(
    q_desc, k_desc, v_desc, O, LSE,
    sm_scale,
    stride_oz, stride_oh, stride_om,
    stride_lse_z, stride_lse_h,
    cu_seqlens_q, cu_seqlens_k,
    num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
    BLOCK_DMODEL: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
    RESCALE_TH: gl.constexpr,
):
    """Grid (cdiv(max_seqlen_q, BLOCK_M), num_seqs * num_heads_q). O + row * stride_om + h * stride_oh
    + d; LSE + h * stride_lse_h + row (row: the packed row). stride_oz and stride_lse_z are the
    batched kernel's arguments (one launcher layout for both): unused, the packed tensors have one batch."""
    gl.static_assert(BLOCK_M == 2 * HALF_ROWS, "BLOCK_M is two warpgroups of 64 rows")
    gl.static_assert(SCHEDULE == 0, "varlen runs the serial schedule (module doc)")
    gl.static_assert(BLOCK_DMODEL != 192, "head dim 192's three-block tiles have no varlen form")
    dtype: gl.constexpr = q_desc.dtype
    HEAD_BLOCK: gl.constexpr = _head_block(BLOCK_DMODEL)
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=_swizzle(BLOCK_DMODEL), element_bitwidth=16,
                                                      rank=2)
    pid_m, off_z, off_h, off_hk = _program_head(num_heads_q, num_heads_k, CAUSAL_TYPE)
    row0_q, seqlen_q = _bounds(cu_seqlens_q, off_z, total_q, max_seqlen_q)
    row0_k, seqlen_k = _bounds(cu_seqlens_k, off_z, total_k, max_seqlen_k)
    start_m = pid_m * BLOCK_M
    if start_m < seqlen_q:
        diag, n_tiles, full_end = _key_range(start_m, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
        lse_ptr = LSE + off_h.to(gl.int64) * stride_lse_h + row0_q
        o_ptr = O + row0_q.to(gl.int64) * stride_om + off_h.to(gl.int64) * stride_oh
        q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_BLOCK], smem_layout)
        k_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
        v_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
        q_bar, ready = _ring_barriers(NUM_STAGES)
        mbarrier.expect(q_bar, q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [0, off_h, 0, row0_q + start_m, 0], q_bar, _tile(q_smem, q_desc))
        mbarrier.wait(q_bar, 0)
        _serial(q_smem, k_desc, v_desc, o_ptr, stride_om, k_ring, v_ring, ready, lse_ptr, sm_scale, 0, off_hk,
                start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                HEAD_BLOCK, BLOCK_DMODEL, CAUSAL_TYPE != 0, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH, row0_k, True)
