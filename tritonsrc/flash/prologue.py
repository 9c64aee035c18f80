"""Kernel prologues shared by the flash kernels: which block and sequence a
program owns, the dropout stream's state and the key range a query block
visits. The early exits (a block past its sequence) stay in the kernels: a
return inside a helper would leave only the helper.
"""
import triton
import triton.language as tl

from .attn_mods import band_key_range, band_offsets
from .seq_bounds import sequence_bounds


@triton.jit
def query_block(cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
                IS_VARLEN: tl.constexpr, CAUSAL_TYPE: tl.constexpr, LOCAL_WINDOW: tl.constexpr,
                BLOCK_M: tl.constexpr):
    """Query block of a program of grid (cdiv(max_seqlen_q, BLOCK_M),
    batch * num_heads_q): (bh, off_z, off_h, off_hk, q_start, seqlen_q,
    k_start, seqlen_k, start_m); the block is empty when start_m >= seqlen_q.
    Masked kernels run the heaviest blocks (largest m) first: shorter tail."""
    pid_m = tl.program_id(0)
    if CAUSAL_TYPE != 0 or LOCAL_WINDOW:
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    off_hk = off_h // (num_heads_q // num_heads_k)
    q_start, seqlen_q = sequence_bounds(cu_seqlens_q, off_z, total_q, max_seqlen_q, IS_VARLEN)
    k_start, seqlen_k = sequence_bounds(cu_seqlens_k, off_z, total_k, max_seqlen_k, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    return bh, off_z, off_h, off_hk, q_start, seqlen_q, k_start, seqlen_k, start_m


@triton.jit
def key_block(cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
              IS_VARLEN: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key block of a program of grid (cdiv(max_seqlen_k, BLOCK_N),
    batch * num_heads_k): (off_z, off_hk, group, q_start, seqlen_q, k_start,
    seqlen_k, start_n); the block is empty when start_n >= seqlen_k."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    off_z = bhk // num_heads_k
    off_hk = bhk % num_heads_k
    group = num_heads_q // num_heads_k
    q_start, seqlen_q = sequence_bounds(cu_seqlens_q, off_z, total_q, max_seqlen_q, IS_VARLEN)
    k_start, seqlen_k = sequence_bounds(cu_seqlens_k, off_z, total_k, max_seqlen_k, IS_VARLEN)
    start_n = pid_n * BLOCK_N
    return off_z, off_hk, group, q_start, seqlen_q, k_start, seqlen_k, start_n


@triton.jit
def philox_state(philox_seed_ptr, philox_offset_ptr, ENABLE_DROPOUT: tl.constexpr):
    """(seed, offset) of the dropout stream; unused zeros without dropout."""
    if ENABLE_DROPOUT:
        seed = tl.load(philox_seed_ptr)
        philox_offset = tl.load(philox_offset_ptr)
    else:
        seed = 0
        philox_offset = 0
    return seed, philox_offset


@triton.jit
def causal_diag(seqlen_q, seqlen_k, CAUSAL_TYPE: tl.constexpr):
    """Query row i sees key j iff j <= i + diag: 0 top-left (CAUSAL_TYPE 1),
    seqlen_k - seqlen_q bottom-right (2)."""
    if CAUSAL_TYPE == 1:
        diag = 0
    else:
        diag = seqlen_k - seqlen_q
    return diag


@triton.jit
def key_range(start_m, seqlen_q, seqlen_k, window_left, window_right, window_align,
              CAUSAL_TYPE: tl.constexpr, LOCAL_WINDOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys of query rows [start_m, start_m + BLOCK_M): (diag, lo, full_lo,
    full_end, hi, lo_off, hi_off). [lo, full_lo) and [full_end, hi) need a
    mask, [full_lo, full_end) does not; without LOCAL_WINDOW lo = full_lo = 0.
    LOCAL_WINDOW: the band [lo_off, hi_off] (attn_mods.py); else causal with
    diag (causal_diag), or no mask."""
    lo = 0
    full_lo = 0
    lo_off = 0
    hi_off = 0
    if LOCAL_WINDOW:
        diag = 0
        lo_off, hi_off = band_offsets(seqlen_q, seqlen_k, window_left, window_right, window_align)
        lo, full_lo, full_end, hi = band_key_range(start_m, seqlen_q, seqlen_k, lo_off, hi_off,
                                                   BLOCK_M, BLOCK_N)
    elif CAUSAL_TYPE == 0:
        diag = 0
        hi = seqlen_k
        full_end = (seqlen_k // BLOCK_N) * BLOCK_N
    else:
        diag = causal_diag(seqlen_q, seqlen_k, CAUSAL_TYPE)
        # Last key seen by the last real row of this block, exclusive.
        hi = tl.minimum(tl.minimum(start_m + BLOCK_M, seqlen_q) + diag, seqlen_k)
        hi = tl.maximum(hi, 0)
        # Keys seen by the first row are visible to every row of the block.
        first_row_keys = tl.maximum(tl.minimum(start_m + diag + 1, seqlen_k), 0)
        full_end = (first_row_keys // BLOCK_N) * BLOCK_N
    return diag, lo, full_lo, full_end, hi, lo_off, hi_off
