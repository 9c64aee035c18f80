"""Flash attention forward for Hopper (sm_90), written in Gluon: TMA, wgmma,
mbarriers and warp specialization scheduled by hand (FlashAttention-3's ideas).

Same results as attn_fwd (fwd.py) for the calls it serves (v2src/ops/flash_fwd.cc
routes them): batched [B, S, H, D] fp16/bf16 with head dim 64, 96, 128, 192 or 256,
16-byte aligned data, GQA, CAUSAL_TYPE 0 none / 1 top-left / 2 bottom-right,
no dropout, no window/softcap/ALiBi. O, and LSE = ln(sum_j exp(scale q.k_j))
(-inf, and O = 0, for a row that sees no key).

Q, K and V come as host-side 5-D TMA descriptors (built by the generated
launcher from the rule's TmaArg, so no device scratch) over the view
[B, H, D/64, S, 64] of the [B, S, H, D] tensor: the box is one (batch, head),
BLOCK rows and the whole head dim, landing in shared memory as D/64 blocks of
[BLOCK, 64] (the 128-byte-swizzled K-major layout wgmma reads), and TMA
zero-fills rows past the sequence. Gluon tensors are powers of two: head
dim 96 runs as 128, its box having 4 blocks of 32 columns where the view
([B, H, D/32, S, 32], 64-byte swizzle) has 3; TMA zero-fills the fourth, so
the padding adds nothing to Q K^T and O's padded columns are not stored.
Head dim 192 is not padded: its box is one 64-column block, each tile is
loaded as three blocks, S is three chained wgmma and O three [rows, 64]
accumulators (_serial_192, _pp_consumer_192). O is written by masked stores.

SCHEDULE (a tuning parameter):
  0 serial: 8 warps = two warpgroups of 64 query rows; every wgmma waited for
    at once, the softmax between them. With BLOCK_N 64 and 2 stages it fits
    two CTAs per SM, which overlap each other (best for short sequences).
  3 ping-pong: one loader warp keeps a NUM_STAGES-deep K/V ring full; two
    consumer warpgroups of 64 rows take turns issuing their wgmma (turn
    mbarriers), so one's softmax runs under the other's tensor-core work.
    Launch with num_warps=4 (the default partition is consumer 0).
  4 persistent ping-pong (fwd_hopper_persistent.py): the same partitions over
    a sequence of tiles, one CTA per SM, so one tile's epilogue and the next
    one's first loads overlap (num_warps=4).
  5 the ping-pong with K and V on barriers of their own (_split_kv_barriers):
    a consumer releases K(j) once Q K^T(j) retired, a turn before V(j), and
    the loader keeps K a tile ahead (_pp_split_loader), so K's copy gets as
    many turns as V's (head dim 256's two stages: 1.14-1.19x the serial form).
RESCALE_TH (a tuning parameter; 0 rescales O at every tile): a row keeps its
running max until a tile's max exceeds it by more than 2**RESCALE_TH, and O's
multiply is skipped while no row moved (fwd_hopper_common._softmax_step).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .fwd_hopper_common import (HALF_ROWS, LN2, LOG2E, _acc_layout, _finish, _head_block, _key_range, _program_head,
                                _rescaled, _softmax_step, _store_o, _swizzle, _tile)
from .fwd_hopper_persistent import persistent_first, persistent_loader, persistent_second


@gluon.jit
def _serial(q_smem, k_desc, v_desc, o_ptr, stride_om, k_ring, v_ring, ready, lse_ptr, sm_scale, off_z, off_hk,
            start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
            HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr,
            BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr, row0_k=0,
            VARLEN: gl.constexpr = False):
    """VARLEN (fwd_hopper_varlen.py): keys start at row row0_k of the packed tensor, and the tile
    crossing the sequence's end holds the next sequence's rows; their scores are masked, and their
    V rows are zeroed in shared memory (_zero_foreign_rows) so that a non-finite value there
    cannot turn 0 * V into NaN."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_N)
    o_layout: gl.constexpr = _acc_layout(NUM_WARPS, HEAD_DIM)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    for i in gl.static_range(NUM_STAGES):
        _load_kv(k_desc, v_desc, k_ring, v_ring, ready, off_z, off_hk, i, n_tiles, BLOCK_N, NUM_STAGES, 1, row0_k)
    offs_m = start_m + gl.arange(0, BLOCK_M, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    for j in range(0, n_tiles):
        stage = j % NUM_STAGES
        mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
        if VARLEN:
            if (j + 1) * BLOCK_N > seqlen_k:
                _zero_foreign_rows(v_ring.index(stage), seqlen_k - j * BLOCK_N, BLOCK_N, HEAD_DIM)
        s = warpgroup_mma(q_smem, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False)
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n, seqlen_k, diag,
                                           j * BLOCK_N >= full_end, CAUSAL, RESCALE_TH)
        acc = _rescaled(acc, alpha, o_rows, RESCALE_TH)
        p = gl.convert_layout(p.to(dtype), p_layout)
        acc = warpgroup_mma(p, v_ring.index(stage), acc)
        # Both warpgroups are done with this stage before TMA refills it.
        gl.thread_barrier()
        _load_kv(k_desc, v_desc, k_ring, v_ring, ready, off_z, off_hk, j + NUM_STAGES, n_tiles, BLOCK_N, NUM_STAGES,
                 1, row0_k)
    _finish(acc, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows, HEAD_DIM, D_REAL)


@gluon.jit
def _zero_foreign_rows(v_tile, valid, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Rows >= valid of a landed V tile set to zero, before any wgmma reads it: a masked rewrite
    through the tile's own (swizzled) shared layout, the generic-proxy writes fenced for the async
    proxy (wgmma), then every warp waits. Once a program, on the tile crossing the keys' end."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    rows_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // HEAD_DIM, HEAD_DIM // 8], [NUM_WARPS, 1], [1, 0])
    v = v_tile.load(rows_layout)
    rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, rows_layout))
    v = gl.where(gl.expand_dims(rows < valid, 1), v, gl.zeros_like(v))
    v_tile.store(v)
    fence_async_shared()
    gl.thread_barrier()


@gluon.jit
def _load_kv(k_desc, v_desc, k_blocks, v_blocks, ready, off_z, off_hk, tile, n_tiles,
             BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, NB: gl.constexpr, row0=0):
    """TMA K and V of key tile `tile` into its ring stage (nothing past the
    end): NB boxes per tensor into slots stage * NB + j (NB = 1: one box of
    the whole head dim; head dim 192: three 64-column blocks). row0: the
    sequence's first row in a packed (varlen) tensor."""
    stage = tile % NUM_STAGES
    pred = tile < n_tiles
    bar = ready.index(stage)
    mbarrier.expect(bar, NB * (k_desc.block_type.nbytes + v_desc.block_type.nbytes), pred=pred)
    for j in gl.static_range(NB):
        tma.async_copy_global_to_shared(k_desc, [off_z, off_hk, j, row0 + tile * BLOCK_N, 0], bar,
                                        _tile(k_blocks.index(stage * NB + j), k_desc), pred=pred)
        tma.async_copy_global_to_shared(v_desc, [off_z, off_hk, j, row0 + tile * BLOCK_N, 0], bar,
                                        _tile(v_blocks.index(stage * NB + j), v_desc), pred=pred)


@gluon.jit
def _serial_192(q_blocks, k_desc, v_desc, o_ptr, stride_om, k_blocks, v_blocks, ready, lse_ptr, sm_scale, off_z,
                off_hk, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """_serial for head dim 192 in three 64-column blocks instead of a
    zero-padded 256: S = sum_j Q_j K_j^T (three chained wgmma), O_j += P V_j
    into three [BLOCK_M, 64] accumulators (Gluon tensors are powers of two),
    so no multiply-add is spent on padding (3/4 of the 256-wide work)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_blocks.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_N)
    o_layout: gl.constexpr = _acc_layout(NUM_WARPS, 64)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    for i in gl.static_range(NUM_STAGES):
        _load_kv(k_desc, v_desc, k_blocks, v_blocks, ready, off_z, off_hk, i, n_tiles, BLOCK_N, NUM_STAGES, 3)
    offs_m = start_m + gl.arange(0, BLOCK_M, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=row_layout)
    acc0 = gl.zeros([BLOCK_M, 64], gl.float32, layout=o_layout)
    acc1 = gl.zeros([BLOCK_M, 64], gl.float32, layout=o_layout)
    acc2 = gl.zeros([BLOCK_M, 64], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    for j in range(0, n_tiles):
        stage = j % NUM_STAGES
        kb = stage * 3
        mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
        s = warpgroup_mma(q_blocks.index(0), k_blocks.index(kb).permute((1, 0)), s_zero, use_acc=False,
                          is_async=True)
        s = warpgroup_mma(q_blocks.index(1), k_blocks.index(kb + 1).permute((1, 0)), s, is_async=True)
        s = warpgroup_mma(q_blocks.index(2), k_blocks.index(kb + 2).permute((1, 0)), s, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n, seqlen_k, diag,
                                           j * BLOCK_N >= full_end, CAUSAL)
        scale = gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
        p = gl.convert_layout(p.to(dtype), p_layout)
        t0 = warpgroup_mma(p, v_blocks.index(kb), acc0 * scale, is_async=True)
        t1 = warpgroup_mma(p, v_blocks.index(kb + 1), acc1 * scale, is_async=True)
        t2 = warpgroup_mma(p, v_blocks.index(kb + 2), acc2 * scale, is_async=True)
        acc0, acc1, acc2, p = warpgroup_mma_wait(num_outstanding=0, deps=(t0, t1, t2, p))
        # Both warpgroups are done with this stage before TMA refills it.
        gl.thread_barrier()
        _load_kv(k_desc, v_desc, k_blocks, v_blocks, ready, off_z, off_hk, j + NUM_STAGES, n_tiles, BLOCK_N,
                        NUM_STAGES, 3)
    _finish_192(acc0, acc1, acc2, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows)


@gluon.jit
def _finish_192(acc0, acc1, acc2, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows: gl.constexpr):
    """_finish for the three 64-column accumulators of head dim 192."""
    l_safe = gl.where(l_i == 0.0, 1.0, l_i)
    inv = gl.expand_dims(gl.convert_layout(1.0 / l_safe, o_rows), 1)
    out_ty: gl.constexpr = o_ptr.dtype.element_ty
    _store_o((acc0 * inv).to(out_ty), o_ptr, stride_om, offs_m, seqlen_q, 64, 64)
    _store_o((acc1 * inv).to(out_ty), o_ptr + 64, stride_om, offs_m, seqlen_q, 64, 64)
    _store_o((acc2 * inv).to(out_ty), o_ptr + 128, stride_om, offs_m, seqlen_q, 64, 64)
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(lse_ptr + offs_m, lse, mask=offs_m < seqlen_q)


@gluon.jit
def _qk_192(q0, q1, q2, k_blocks, kb, s_zero):
    """S = Q K^T over three 64-column blocks: three chained async wgmma (three groups)."""
    s = warpgroup_mma(q0, k_blocks.index(kb).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma(q1, k_blocks.index(kb + 1).permute((1, 0)), s, is_async=True)
    return warpgroup_mma(q2, k_blocks.index(kb + 2).permute((1, 0)), s, is_async=True)


@gluon.jit
def _release_k(empty, stage, SPLIT_KV: gl.constexpr):
    """SCHEDULE 5: K's stage is free once this consumer's Q K^T on it retired (V's stays in use)."""
    if SPLIT_KV:
        mbarrier.arrive(empty.index(stage))


@gluon.jit
def _wait_v(v_ready, tile, NUM_STAGES: gl.constexpr, SPLIT_KV: gl.constexpr):
    """SCHEDULE 5: V of `tile` landed (otherwise the shared K/V barrier covered it)."""
    if SPLIT_KV:
        mbarrier.wait(v_ready.index(tile % NUM_STAGES), (tile // NUM_STAGES) & 1)


@gluon.jit
def _release_v(empty, v_empty, stage, SPLIT_KV: gl.constexpr):
    """After P V on a stage: V's stage under SCHEDULE 5, the shared K/V stage otherwise."""
    if SPLIT_KV:
        mbarrier.arrive(v_empty.index(stage))
    else:
        mbarrier.arrive(empty.index(stage))


@gluon.jit
def _pp_consumer_192(q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                     start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                     WHICH: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
                     v_ready=None, v_empty=None, SPLIT_KV: gl.constexpr = False):
    """_pp_consumer for head dim 192 in three 64-column blocks: per turn,
    S_j (three chained wgmma) and P_{j-1} V_{j-1} (three, one per O block)
    issued together; wait for S's groups, softmax, wait for the rest.
    SPLIT_KV (SCHEDULE 5): K's and V's barriers apart, as _pp_consumer's."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_blocks.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_N)
    o_layout: gl.constexpr = _acc_layout(NUM_WARPS, 64)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    my_turn = turn.index(WHICH)
    other_turn = turn.index(1 - WHICH)
    row0 = start_m + WHICH * HALF_ROWS
    q0 = q_blocks.index(0).slice(WHICH * HALF_ROWS, HALF_ROWS)
    q1 = q_blocks.index(1).slice(WHICH * HALF_ROWS, HALF_ROWS)
    q2 = q_blocks.index(2).slice(WHICH * HALF_ROWS, HALF_ROWS)
    offs_m = row0 + gl.arange(0, HALF_ROWS, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([HALF_ROWS], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([HALF_ROWS], 0.0, gl.float32, layout=row_layout)
    acc0 = gl.zeros([HALF_ROWS, 64], gl.float32, layout=o_layout)
    acc1 = gl.zeros([HALF_ROWS, 64], gl.float32, layout=o_layout)
    acc2 = gl.zeros([HALF_ROWS, 64], gl.float32, layout=o_layout)
    s_zero = gl.zeros([HALF_ROWS, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)
    if n_tiles > 0:
        mbarrier.wait(ready.index(0), 0)
        mbarrier.wait(my_turn, 0)
        s_tok = _qk_192(q0, q1, q2, k_blocks, 0, s_zero)
        mbarrier.arrive(other_turn)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
        _release_k(empty, 0, SPLIT_KV)
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                           full_end <= 0, CAUSAL)
        p = gl.convert_layout(p.to(dtype), p_layout)
        for j in range(1, n_tiles):
            stage = j % NUM_STAGES
            prev = (j - 1) % NUM_STAGES
            mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
            _wait_v(v_ready, j - 1, NUM_STAGES, SPLIT_KV)
            mbarrier.wait(my_turn, j & 1)
            s_tok = _qk_192(q0, q1, q2, k_blocks, stage * 3, s_zero)
            t0 = warpgroup_mma(p, v_blocks.index(prev * 3), acc0, is_async=True)
            t1 = warpgroup_mma(p, v_blocks.index(prev * 3 + 1), acc1, is_async=True)
            t2 = warpgroup_mma(p, v_blocks.index(prev * 3 + 2), acc2, is_async=True)
            mbarrier.arrive(other_turn)
            s = warpgroup_mma_wait(num_outstanding=3, deps=(s_tok, ))
            _release_k(empty, stage, SPLIT_KV)
            p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                    seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL)
            acc0, acc1, acc2, p = warpgroup_mma_wait(num_outstanding=0, deps=(t0, t1, t2, p))
            p = gl.convert_layout(p_next.to(dtype), p_layout)
            scale = gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
            acc0 = acc0 * scale
            acc1 = acc1 * scale
            acc2 = acc2 * scale
            _release_v(empty, v_empty, prev, SPLIT_KV)
        last = (n_tiles - 1) % NUM_STAGES
        _wait_v(v_ready, n_tiles - 1, NUM_STAGES, SPLIT_KV)
        mbarrier.wait(my_turn, n_tiles & 1)
        t0 = warpgroup_mma(p, v_blocks.index(last * 3), acc0, is_async=True)
        t1 = warpgroup_mma(p, v_blocks.index(last * 3 + 1), acc1, is_async=True)
        t2 = warpgroup_mma(p, v_blocks.index(last * 3 + 2), acc2, is_async=True)
        mbarrier.arrive(other_turn)
        acc0, acc1, acc2, p = warpgroup_mma_wait(num_outstanding=0, deps=(t0, t1, t2, p))
        _release_v(empty, v_empty, last, SPLIT_KV)
    _finish_192(acc0, acc1, acc2, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows)


@gluon.jit
def _pp_first_192(q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                  start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                  CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, v_ready=None, v_empty=None,
                  SPLIT_KV: gl.constexpr = False):
    _pp_consumer_192(q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                     start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, 0, CAUSAL, BLOCK_N, NUM_STAGES,
                     v_ready, v_empty, SPLIT_KV)


@gluon.jit
def _pp_second_192(q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                   start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                   CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, v_ready=None, v_empty=None,
                   SPLIT_KV: gl.constexpr = False):
    _pp_consumer_192(q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                     start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, 1, CAUSAL, BLOCK_N, NUM_STAGES,
                     v_ready, v_empty, SPLIT_KV)


@gluon.jit
def _ring_barriers(NUM_STAGES: gl.constexpr):
    """(q_bar, ready): Q's barrier and one per K/V ring stage, initialised."""
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
    return q_bar, ready


@gluon.jit
def _pingpong_barriers(NUM_STAGES: gl.constexpr):
    """(empty, turn) of the ping-pong schedule: a stage is free when both
    consumers released it; consumer 0 has the first turn."""
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(empty.index(i), count=2)
    return empty, _turn_barriers()


@gluon.jit
def _turn_barriers():
    """The consumers' turn barriers, initialised: consumer 0 has the first turn."""
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    mbarrier.arrive(turn.index(0))
    return turn


@gluon.jit
def _pp_loader(k_desc, v_desc, k_ring, v_ring, ready, empty, off_z, off_hk, n_tiles,
               BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, NB: gl.constexpr):
    """Ping-pong loader warp: refills a stage once both consumers released it."""
    for t in range(0, n_tiles):
        stage = t % NUM_STAGES
        mbarrier.wait(empty.index(stage), ((t // NUM_STAGES) - 1) & 1, pred=t >= NUM_STAGES)
        _load_kv(k_desc, v_desc, k_ring, v_ring, ready, off_z, off_hk, t, n_tiles, BLOCK_N, NUM_STAGES, NB)


@gluon.jit
def _pp_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                 start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                 WHICH: gl.constexpr, HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL: gl.constexpr,
                 BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr,
                 v_ready=None, v_empty=None, SPLIT_KV: gl.constexpr = False):
    """Rows start_m + 64*WHICH .. +63. Turn t of this consumer completes its
    turn barrier's phase t: the other consumer arrives right after issuing
    (consumer 0's first turn is pre-arrived by the kernel). Per turn: Q K^T
    of tile j and P V of tile j-1 issued together, wait(1), softmax of j.
    SPLIT_KV (SCHEDULE 5): ready / empty are K's barriers and v_ready / v_empty
    V's; K(j) is released as soon as Q K^T(j) retired, a turn before V(j)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_N)
    o_layout: gl.constexpr = _acc_layout(NUM_WARPS, HEAD_DIM)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    my_turn = turn.index(WHICH)
    other_turn = turn.index(1 - WHICH)
    row0 = start_m + WHICH * HALF_ROWS
    q = q_smem.slice(WHICH * HALF_ROWS, HALF_ROWS)
    offs_m = row0 + gl.arange(0, HALF_ROWS, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([HALF_ROWS], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([HALF_ROWS], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([HALF_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([HALF_ROWS, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)
    if n_tiles > 0:
        mbarrier.wait(ready.index(0), 0)
        mbarrier.wait(my_turn, 0)
        s_tok = warpgroup_mma(q, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        mbarrier.arrive(other_turn)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
        _release_k(empty, 0, SPLIT_KV)
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                           full_end <= 0, CAUSAL, RESCALE_TH)
        p = gl.convert_layout(p.to(dtype), p_layout)
        for j in range(1, n_tiles):
            stage = j % NUM_STAGES
            prev = (j - 1) % NUM_STAGES
            mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
            _wait_v(v_ready, j - 1, NUM_STAGES, SPLIT_KV)
            mbarrier.wait(my_turn, j & 1)
            s_tok = warpgroup_mma(q, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
            mbarrier.arrive(other_turn)
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
            _release_k(empty, stage, SPLIT_KV)
            p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                    seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL, RESCALE_TH)
            acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
            p = gl.convert_layout(p_next.to(dtype), p_layout)
            acc = _rescaled(acc, alpha, o_rows, RESCALE_TH)
            _release_v(empty, v_empty, prev, SPLIT_KV)
        last = (n_tiles - 1) % NUM_STAGES
        _wait_v(v_ready, n_tiles - 1, NUM_STAGES, SPLIT_KV)
        mbarrier.wait(my_turn, n_tiles & 1)
        o_tok = warpgroup_mma(p, v_ring.index(last), acc, is_async=True)
        mbarrier.arrive(other_turn)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
        _release_v(empty, v_empty, last, SPLIT_KV)
    _finish(acc, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows, HEAD_DIM, D_REAL)


# Partition entry points, so that the consumer index is a literal constexpr.
@gluon.jit
def _pp_first(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
              start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
              HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
              NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr, v_ready=None, v_empty=None,
              SPLIT_KV: gl.constexpr = False):
    _pp_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                 start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, 0, HEAD_DIM, D_REAL, CAUSAL, BLOCK_N,
                 NUM_STAGES, RESCALE_TH, v_ready, v_empty, SPLIT_KV)


@gluon.jit
def _pp_second(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
               start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
               HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
               NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr, v_ready=None, v_empty=None,
               SPLIT_KV: gl.constexpr = False):
    _pp_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                 start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, 1, HEAD_DIM, D_REAL, CAUSAL, BLOCK_N,
                 NUM_STAGES, RESCALE_TH, v_ready, v_empty, SPLIT_KV)


@gluon.jit
def _load_one(desc, ring, ready, off_z, off_hk, tile, n_tiles, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
              NB: gl.constexpr):
    """TMA one tensor's key tile `tile` (nothing past the end) into its ring stage: NB boxes into
    slots stage * NB + j, as _load_kv."""
    stage = tile % NUM_STAGES
    pred = tile < n_tiles
    mbarrier.expect(ready.index(stage), NB * desc.block_type.nbytes, pred=pred)
    for j in gl.static_range(NB):
        tma.async_copy_global_to_shared(desc, [off_z, off_hk, j, tile * BLOCK_N, 0], ready.index(stage),
                                        _tile(ring.index(stage * NB + j), desc), pred=pred)


@gluon.jit
def _pp_split_loader(k_desc, v_desc, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, off_z, off_hk, n_tiles,
                     BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, NB: gl.constexpr):
    """SCHEDULE 5's loader: K one tile ahead of V (turn j reads K(j) and V(j - 1)), each refilled
    once both consumers released that tensor's stage."""
    for t in range(0, n_tiles + 1):
        stage = t % NUM_STAGES
        mbarrier.wait(k_empty.index(stage), ((t // NUM_STAGES) - 1) & 1, pred=(t >= NUM_STAGES) & (t < n_tiles))
        _load_one(k_desc, k_ring, k_ready, off_z, off_hk, t, n_tiles, BLOCK_N, NUM_STAGES, NB)
        if t > 0:
            u = t - 1
            u_stage = u % NUM_STAGES
            mbarrier.wait(v_empty.index(u_stage), ((u // NUM_STAGES) - 1) & 1, pred=u >= NUM_STAGES)
            _load_one(v_desc, v_ring, v_ready, off_z, off_hk, u, n_tiles, BLOCK_N, NUM_STAGES, NB)


@gluon.jit
def _split_kv_barriers(NUM_STAGES: gl.constexpr):
    """(k_ready, k_empty, v_ready, v_empty) of SCHEDULE 5: one copy (ready) and two consumer
    releases (empty) per stage and tensor."""
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)
        mbarrier.init(v_empty.index(i), count=2)
    return k_ready, k_empty, v_ready, v_empty


@gluon.jit
def attn_fwd_hopper(
    q_desc, k_desc, v_desc, O, LSE,
    sm_scale,
    stride_oz, stride_oh, stride_om,
    stride_lse_z, stride_lse_h,
    num_heads_q, num_heads_k, seqlen_q, seqlen_k, num_seqs,
    BLOCK_DMODEL: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
    RESCALE_TH: gl.constexpr,
):
    """Grid (cdiv(seqlen_q, BLOCK_M), batch * num_heads_q); SCHEDULE 4:
    (min(tiles, SMs),). BLOCK_M is 128 (two warpgroups of 64 rows).
    O + b*stride_oz + h*stride_oh + row*stride_om + d, LSE + b*stride_lse_z +
    h*stride_lse_h + row."""
    gl.static_assert(BLOCK_M == 2 * HALF_ROWS, "BLOCK_M is two warpgroups of 64 rows")
    gl.static_assert(SCHEDULE == 0 or SCHEDULE == 3 or SCHEDULE == 4 or SCHEDULE == 5,
                     "schedules: 0 serial, 3 ping-pong, 4 persistent, 5 ping-pong with K and V released apart")
    dtype: gl.constexpr = q_desc.dtype
    HEAD_BLOCK: gl.constexpr = _head_block(BLOCK_DMODEL)
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=_swizzle(BLOCK_DMODEL), element_bitwidth=16,
                                                      rank=2)
    gl.static_assert(RESCALE_TH == 0 or BLOCK_DMODEL != 192,
                     "the lazy rescale (RESCALE_TH) is built for the loops of one O accumulator")
    if SCHEDULE == 4:
        gl.static_assert(BLOCK_DMODEL != 192, "head dim 192 has no persistent form")
        q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_BLOCK], smem_layout)
        k_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
        v_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
        # q_ready: the loader's Q copy landed; q_empty: both consumers are done reading Q.
        q_ready, ready = _ring_barriers(NUM_STAGES)
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_empty, count=2)
        empty, turn = _pingpong_barriers(NUM_STAGES)
        num_bh = num_seqs * num_heads_q
        gl.warp_specialize([
            (persistent_first, (q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
                                stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
                                num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                                HEAD_BLOCK, BLOCK_DMODEL, CAUSAL_TYPE, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH)),
            (persistent_second, (q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
                                 stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
                                 num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                                 HEAD_BLOCK, BLOCK_DMODEL, CAUSAL_TYPE, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH)),
            (persistent_loader, (q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty,
                                 num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N,
                                 NUM_STAGES)),
        ], [4, 1], [232, 56])
        return

    pid_m, off_z, off_h, off_hk = _program_head(num_heads_q, num_heads_k, CAUSAL_TYPE)
    start_m = pid_m * BLOCK_M

    diag, n_tiles, full_end = _key_range(start_m, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
    lse_ptr = LSE + off_z.to(gl.int64) * stride_lse_z + off_h.to(gl.int64) * stride_lse_h
    o_ptr = O + off_z.to(gl.int64) * stride_oz + off_h.to(gl.int64) * stride_oh

    if BLOCK_DMODEL == 192:
        # Three 64-column blocks per tile, one TMA box each (the descriptors' box is one block).
        q_blocks = gl.allocate_shared_memory(dtype, [3, BLOCK_M, 64], smem_layout)
        k_blocks = gl.allocate_shared_memory(dtype, [NUM_STAGES * 3, BLOCK_N, 64], smem_layout)
        v_blocks = gl.allocate_shared_memory(dtype, [NUM_STAGES * 3, BLOCK_N, 64], smem_layout)
        q_bar, ready = _ring_barriers(NUM_STAGES)
        mbarrier.expect(q_bar, 3 * q_desc.block_type.nbytes)
        for j in gl.static_range(3):
            tma.async_copy_global_to_shared(q_desc, [off_z, off_h, j, start_m, 0], q_bar,
                                            _tile(q_blocks.index(j), q_desc))
        if SCHEDULE == 0:
            mbarrier.wait(q_bar, 0)
            _serial_192(q_blocks, k_desc, v_desc, o_ptr, stride_om, k_blocks, v_blocks, ready, lse_ptr, sm_scale,
                        off_z, off_hk, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                        CAUSAL_TYPE != 0, BLOCK_M, BLOCK_N, NUM_STAGES)
        elif SCHEDULE == 5:
            k_ready, k_empty, v_ready, v_empty = _split_kv_barriers(NUM_STAGES)
            turn = _turn_barriers()
            gl.warp_specialize([
                (_pp_first_192, (q_blocks, k_blocks, v_blocks, q_bar, k_ready, k_empty, turn, o_ptr, stride_om,
                                 lse_ptr, sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                                 CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, v_ready, v_empty, True)),
                (_pp_second_192, (q_blocks, k_blocks, v_blocks, q_bar, k_ready, k_empty, turn, o_ptr, stride_om,
                                  lse_ptr, sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                                  CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, v_ready, v_empty, True)),
                (_pp_split_loader, (k_desc, v_desc, k_blocks, v_blocks, k_ready, k_empty, v_ready, v_empty, off_z,
                                    off_hk, n_tiles, BLOCK_N, NUM_STAGES, 3)),
            ], [4, 1], [232, 40])
        else:
            empty, turn = _pingpong_barriers(NUM_STAGES)
            gl.warp_specialize([
                (_pp_first_192, (q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr,
                                 sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, CAUSAL_TYPE != 0,
                                 BLOCK_N, NUM_STAGES)),
                (_pp_second_192, (q_blocks, k_blocks, v_blocks, q_bar, ready, empty, turn, o_ptr, stride_om,
                                  lse_ptr, sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                                  CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES)),
                (_pp_loader, (k_desc, v_desc, k_blocks, v_blocks, ready, empty, off_z, off_hk, n_tiles, BLOCK_N,
                              NUM_STAGES, 3)),
            ], [4, 1], [232, 40])
        return
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_BLOCK], smem_layout)
    k_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
    v_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_BLOCK], smem_layout)
    q_bar, ready = _ring_barriers(NUM_STAGES)
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [off_z, off_h, 0, start_m, 0], q_bar, _tile(q_smem, q_desc))

    if SCHEDULE == 0:
        mbarrier.wait(q_bar, 0)
        _serial(q_smem, k_desc, v_desc, o_ptr, stride_om, k_ring, v_ring, ready, lse_ptr, sm_scale, off_z, off_hk,
                start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                HEAD_BLOCK, BLOCK_DMODEL, CAUSAL_TYPE != 0, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH)
    elif SCHEDULE == 5:
        # ready (from _ring_barriers) stays unused: K and V get barriers of their own.
        k_ready, k_empty, v_ready, v_empty = _split_kv_barriers(NUM_STAGES)
        turn = _turn_barriers()
        # The ping-pong's consumers with K's barriers in place of the shared ones, and V's.
        gl.warp_specialize([
            (_pp_first, (q_smem, k_ring, v_ring, q_bar, k_ready, k_empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                         start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                         CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, RESCALE_TH, v_ready, v_empty, True)),
            (_pp_second, (q_smem, k_ring, v_ring, q_bar, k_ready, k_empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                          start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                          CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, RESCALE_TH, v_ready, v_empty, True)),
            (_pp_split_loader, (k_desc, v_desc, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, off_z, off_hk,
                                n_tiles, BLOCK_N, NUM_STAGES, 1)),
        ], [4, 1], [232, 40])
    else:
        empty, turn = _pingpong_barriers(NUM_STAGES)
        # The argument tuples stay inline: a tuple assigned to a variable
        # first turns its constexprs into runtime values.
        gl.warp_specialize([
            (_pp_first, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                         start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                         CAUSAL_TYPE != 0,
                         BLOCK_N, NUM_STAGES, RESCALE_TH)),
            (_pp_second, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_ptr, stride_om, lse_ptr, sm_scale,
                          start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_BLOCK, BLOCK_DMODEL,
                         CAUSAL_TYPE != 0,
                          BLOCK_N, NUM_STAGES, RESCALE_TH)),
            (_pp_loader, (k_desc, v_desc, k_ring, v_ring, ready, empty, off_z, off_hk, n_tiles, BLOCK_N, NUM_STAGES,
                          1)),
        ], [4, 1], [232, 40])
