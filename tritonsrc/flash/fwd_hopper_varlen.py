"""The sm_90 Gluon forward for packed variable-length batches (flash_attn_varlen_func's layout):
Q/O [total_q, Hq, D], K/V [total_k, Hk, D], sequence b at rows [cu_seqlens[b], cu_seqlens[b + 1]).

The body is fwd_hopper.py's serial or ping-pong schedule; only where a program's rows are differs. The TMA
descriptors are the batched kernel's 5-D view with one batch over the whole packed tensor, so a
tile that crosses its sequence's end reads the next sequence's rows (TMA zero-fills only past
the tensor): Q's foreign rows are never stored, K's get -inf scores, and V's are zeroed in shared
memory before P V reads them, so that a non-finite value there cannot turn 0 * V into NaN:
  SCHEDULE 0 (serial): both warpgroups rewrite the rows (fwd_hopper._zero_foreign_rows).
  SCHEDULE 3 (ping-pong, fwd_hopper's consumers unchanged): the loader warp lands the tile that
    crosses the keys' end on a barrier of its own, zeroes V's foreign rows, fences them for the
    async proxy and only then arrives on the stage's `ready` barrier, so both consumers, which
    share the stage, see the clean tile (_varlen_loader).

cu_seqlens come from user memory and are clamped as tritonsrc/flash/seq_bounds.py does for the
Triton kernels (a row outside [0, total) is never addressed; a decreasing pair is an empty
sequence; a sequence longer than max_seqlen keeps its first max_seqlen rows).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .fwd_hopper import _load_kv, _pingpong_barriers, _pp_first, _pp_second, _ring_barriers, _serial
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
def _zero_rows_from(v_tile, valid, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Rows >= valid of a landed V tile set to zero by one warp, 8 rows at a time (a slice of 8 rows
    keeps the swizzle pattern whole; 32 values a lane at head dim 128), then fenced for the async proxy."""
    CHUNK: gl.constexpr = 8
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // HEAD_DIM, HEAD_DIM // 8], [1, 1], [1, 0])
    rows = gl.arange(0, CHUNK, layout=gl.SliceLayout(1, layout))
    for c in gl.static_range(BLOCK_N // CHUNK):
        if (c + 1) * CHUNK > valid:
            chunk = v_tile.slice(c * CHUNK, CHUNK)
            v = chunk.load(layout)
            v = gl.where(gl.expand_dims(c * CHUNK + rows < valid, 1), v, gl.zeros_like(v))
            chunk.store(v)
    # Each lane fences its own writes; the arrive that publishes them (mbarrier.arrive from one lane) is
    # lowered behind a warp barrier, so every lane's rows are written and fenced before it.
    fence_async_shared()


@gluon.jit
def _varlen_loader(k_desc, v_desc, k_ring, v_ring, ready, empty, landed, off_hk, n_tiles, seqlen_k, row0_k,
                   BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, HEAD_DIM: gl.constexpr):
    """The ping-pong loader (fwd_hopper._pp_loader) for packed keys: tile t at row row0_k + t * BLOCK_N.
    Only the last tile can cross the keys' end; it lands on its stage's `landed` barrier instead of
    `ready` (each is used once, phase 0), its V rows past seqlen_k are zeroed, and `ready` gets a
    plain arrive (its one expected arrival) once they are."""
    for t in range(0, n_tiles):
        stage = t % NUM_STAGES
        mbarrier.wait(empty.index(stage), ((t // NUM_STAGES) - 1) & 1, pred=t >= NUM_STAGES)
        if (t + 1) * BLOCK_N > seqlen_k:
            _load_kv(k_desc, v_desc, k_ring, v_ring, landed, 0, off_hk, t, n_tiles, BLOCK_N, NUM_STAGES, 1, row0_k)
            mbarrier.wait(landed.index(stage), 0)
            _zero_rows_from(v_ring.index(stage), seqlen_k - t * BLOCK_N, BLOCK_N, HEAD_DIM)
            mbarrier.arrive(ready.index(stage))
        else:
            _load_kv(k_desc, v_desc, k_ring, v_ring, ready, 0, off_hk, t, n_tiles, BLOCK_N, NUM_STAGES, 1, row0_k)


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
    gl.static_assert(SCHEDULE == 0 or SCHEDULE == 3, "varlen runs the serial or the ping-pong schedule")
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
        if SCHEDULE == 3:
            empty, turn = _pingpong_barriers(NUM_STAGES)
            # The crossing tile's copy barrier, one per stage so that _load_kv can address it as `ready`.
            landed = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
            for i in gl.static_range(NUM_STAGES):
                mbarrier.init(landed.index(i), count=1)
            gl.warp_specialize([
                (_pp_first, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                             start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                             CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, RESCALE_TH)),
                (_pp_second, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                              start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                              CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, RESCALE_TH)),
                (_varlen_loader, (k_desc, v_desc, k_ring, v_ring, ready, empty, landed, off_hk, n_tiles, seqlen_k,
                                  row0_k, BLOCK_N, NUM_STAGES, HEAD_BLOCK)),
            ], [4, 1], [232, 56])
            return
        mbarrier.wait(q_bar, 0)
        _serial(q_smem, k_desc, v_desc, o_ptr, stride_om, k_ring, v_ring, ready, lse_ptr, sm_scale, 0, off_hk,
                start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                HEAD_BLOCK, BLOCK_DMODEL, CAUSAL_TYPE != 0, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH, row0_k, True)
