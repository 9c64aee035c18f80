"""Experiment: the Gluon Hopper flash forward of flash_fwd_gluon_kernel.py,
warp-specialized with FlashAttention-3's ping-pong (same arguments and
semantics; launch with num_warps=4).

Partitions (gl.warp_specialize), BLOCK_M = 128 query rows per CTA:
- two consumer warpgroups, 64 rows each, sharing the K/V tiles;
- one loader warp (few registers, setmaxnreg) that keeps the K/V ring full by
  TMA: it waits on a stage's `empty` mbarrier (one arrival per consumer)
  before refilling it, so no CTA-wide barrier is needed.
Ping-pong: a consumer issues its wgmma (Q K^T of tile j and P V of tile j-1)
only on its turn (`turn` mbarriers) and hands the turn over right after the
issue, so one warpgroup's softmax runs while the other's wgmma occupy the
tensor cores. Barriers the compiler inserts inside a partition are named
barriers of that partition only, so the two consumers do not run in lockstep.
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

from bench.experiments.flash_fwd_gluon_kernel import LN2, LOG2E, _softmax_step

CONSUMER_ROWS = gl.constexpr(64)


@gluon.jit
def _ws_loader(k_base, v_base, stride_kn, stride_vn, seqlen_k, k_ring, v_ring, ready, empty, n_tiles,
               HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    # Built here, by the warp that uses them (each descriptor is released and
    # acquired by the threads that create it).
    k_desc = tma.make_tensor_descriptor(k_base, [seqlen_k, HEAD_DIM], [stride_kn, 1], [BLOCK_N, HEAD_DIM],
                                        k_ring.layout)
    v_desc = tma.make_tensor_descriptor(v_base, [seqlen_k, HEAD_DIM], [stride_vn, 1], [BLOCK_N, HEAD_DIM],
                                        v_ring.layout)
    for t in range(0, n_tiles):
        stage = t % NUM_STAGES
        # The stage's previous tile (t - NUM_STAGES) must be released by both consumers.
        mbarrier.wait(empty.index(stage), ((t // NUM_STAGES) - 1) & 1, pred=t >= NUM_STAGES)
        bar = ready.index(stage)
        mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [t * BLOCK_N, 0], bar, k_ring.index(stage))
        tma.async_copy_global_to_shared(v_desc, [t * BLOCK_N, 0], bar, v_ring.index(stage))


@gluon.jit
def _ws_mainloop_nextqk(q, k_ring, v_ring, ready, empty, my_turn, other_turn, acc, m_i, l_i, s_zero,
                        qk_scale, offs_m, offs_n, seqlen_k, n_tiles, full_end, diag,
                        CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Ping-pong with the next-Q K^T order inside the warpgroup (n_tiles > 0):
    each turn issues P V(j-1) then Q K^T(j+1); wait(1) retires P V(j-1) (the
    older group) before the softmax of tile j, so only Q K^T(j+1), whose
    operands are in shared memory, is in flight under it. Turns: 0 = Q K^T(0),
    1 = Q K^T(1), j+1 = P V(j-1) + Q K^T(j+1), n = P V(n-2), n+1 = P V(n-1);
    2 turns when n == 1. The ring needs 3 stages: tile j+1 is awaited before
    tile j-1 is released."""
    gl.static_assert(NUM_STAGES >= 3, "the next-Q K^T ping-pong needs 3 stages")
    dtype: gl.constexpr = q.dtype
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    mbarrier.wait(ready.index(0), 0)
    mbarrier.wait(my_turn, 0)
    s_tok = warpgroup_mma(q, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    mbarrier.arrive(other_turn)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
    if n_tiles == 1:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                           full_end <= 0, CAUSAL)
        p = gl.convert_layout(p.to(dtype), p_layout)
        mbarrier.wait(my_turn, 1)
        o_tok = warpgroup_mma(p, v_ring.index(0), acc, is_async=True)
        mbarrier.arrive(other_turn)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
        mbarrier.arrive(empty.index(0))
    else:
        mbarrier.wait(ready.index(1 % NUM_STAGES), (1 // NUM_STAGES) & 1)
        mbarrier.wait(my_turn, 1)
        s_tok = warpgroup_mma(q, k_ring.index(1 % NUM_STAGES).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
        mbarrier.arrive(other_turn)
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                           full_end <= 0, CAUSAL)
        p = gl.convert_layout(p.to(dtype), p_layout)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
        for j in range(1, n_tiles - 1):
            prev = (j - 1) % NUM_STAGES
            nxt = (j + 1) % NUM_STAGES
            mbarrier.wait(ready.index(nxt), ((j + 1) // NUM_STAGES) & 1)
            mbarrier.wait(my_turn, (j + 1) & 1)
            o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
            s_tok = warpgroup_mma(q, k_ring.index(nxt).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            mbarrier.arrive(other_turn)
            # Groups retire in order: 1 outstanding = P V(j-1) done, Q K^T(j+1) runs on.
            acc, p = warpgroup_mma_wait(num_outstanding=1, deps=(o_tok, p))
            mbarrier.arrive(empty.index(prev))
            p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                    seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
            p = gl.convert_layout(p_next.to(dtype), p_layout)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
        j = n_tiles - 1
        prev = (j - 1) % NUM_STAGES
        mbarrier.wait(my_turn, n_tiles & 1)
        o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
        mbarrier.arrive(other_turn)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
        mbarrier.arrive(empty.index(prev))
        p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
        p = gl.convert_layout(p_next.to(dtype), p_layout)
        mbarrier.wait(my_turn, (n_tiles + 1) & 1)
        o_tok = warpgroup_mma(p, v_ring.index(j % NUM_STAGES), acc, is_async=True)
        mbarrier.arrive(other_turn)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
        mbarrier.arrive(empty.index(j % NUM_STAGES))
    return acc, m_i, l_i


@gluon.jit
def _ws_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                 sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                 WHICH: gl.constexpr, HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr,
                 BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, MODE: gl.constexpr):
    """Rows start_m + 64*WHICH ... + 63 of the CTA's block. MODE 3 / 4: FA3
    order within the warpgroup (Q K^T(j) and P V(j-1) issued together,
    wait(1), softmax(j), wait(0)), the issue guarded by the ping-pong turn (3)
    or not (4); MODE 5: _ws_mainloop_nextqk."""
    PINGPONG: gl.constexpr = MODE != 4
    ROWS: gl.constexpr = CONSUMER_ROWS
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    my_turn = turn.index(WHICH)
    other_turn = turn.index(1 - WHICH)

    row0 = start_m + WHICH * ROWS
    q = q_smem.slice(WHICH * ROWS, ROWS)
    o_desc = tma.make_tensor_descriptor(o_base, [seqlen_q, HEAD_DIM], [stride_om, 1], [ROWS, HEAD_DIM],
                                        q_smem.layout)
    offs_m = row0 + gl.arange(0, ROWS, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([ROWS], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)

    if MODE == 5:
        if n_tiles > 0:
            acc, m_i, l_i = _ws_mainloop_nextqk(q, k_ring, v_ring, ready, empty, my_turn, other_turn, acc, m_i, l_i,
                                                s_zero, qk_scale, offs_m, offs_n, seqlen_k, n_tiles, full_end,
                                                diag, CAUSAL, BLOCK_N, NUM_STAGES)
    elif n_tiles > 0:
        # Turn t of this consumer completes its turn barrier's phase t (the
        # other consumer arrives after its issue; consumer 0's first turn is
        # pre-arrived by the kernel).
        mbarrier.wait(ready.index(0), 0)
        mbarrier.wait(my_turn, 0, pred=PINGPONG)
        s_tok = warpgroup_mma(q, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        mbarrier.arrive(other_turn, pred=PINGPONG)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                           full_end <= 0, CAUSAL)
        p = gl.convert_layout(p.to(dtype), p_layout)
        for j in range(1, n_tiles):
            stage = j % NUM_STAGES
            prev = (j - 1) % NUM_STAGES
            mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
            mbarrier.wait(my_turn, j & 1, pred=PINGPONG)
            s_tok = warpgroup_mma(q, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
            mbarrier.arrive(other_turn, pred=PINGPONG)
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
            p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                    seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL)
            acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
            p = gl.convert_layout(p_next.to(dtype), p_layout)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
            mbarrier.arrive(empty.index(prev))
        last = (n_tiles - 1) % NUM_STAGES
        mbarrier.wait(my_turn, n_tiles & 1, pred=PINGPONG)
        o_tok = warpgroup_mma(p, v_ring.index(last), acc, is_async=True)
        mbarrier.arrive(other_turn, pred=PINGPONG)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
        mbarrier.arrive(empty.index(last))

    l_safe = gl.where(l_i == 0.0, 1.0, l_i)
    inv = gl.convert_layout(1.0 / l_safe, o_rows)
    # This consumer's Q rows are free: stage its O rows there for one TMA store.
    q.store((acc * gl.expand_dims(inv, 1)).to(dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [row0, 0], q)
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(LSE + lse_base + offs_m, lse, mask=offs_m < seqlen_q)
    tma.store_wait(pendings=0)


# Partition entry points, so that the consumer index is a literal constexpr.
@gluon.jit
def _ws_first_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                       sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                       HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                       NUM_STAGES: gl.constexpr, MODE: gl.constexpr):
    _ws_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                 sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                 0, HEAD_DIM, CAUSAL, BLOCK_N, NUM_STAGES, MODE)


@gluon.jit
def _ws_second_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                        sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                        HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
                        NUM_STAGES: gl.constexpr, MODE: gl.constexpr):
    _ws_consumer(q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                 sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag,
                 1, HEAD_DIM, CAUSAL, BLOCK_N, NUM_STAGES, MODE)


@gluon.jit(do_not_specialize=[
    "stride_qz", "stride_qh", "stride_qm", "stride_kz", "stride_kh", "stride_kn",
    "stride_vz", "stride_vh", "stride_vn", "stride_oz", "stride_oh", "stride_om",
    "stride_lse_z", "stride_lse_h", "num_heads_q", "num_heads_k", "seqlen_q", "seqlen_k"])
def attn_fwd_gluon_ws(
    Q, K, V, O, LSE,
    sm_scale,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_oz, stride_oh, stride_om,
    stride_lse_z, stride_lse_h,
    num_heads_q, num_heads_k, seqlen_q, seqlen_k,
    HEAD_DIM: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
):
    """SCHEDULE: 3 ping-pong, 4 warp-specialized without the turn (the loader
    partition alone), 5 ping-pong with the next-Q K^T order inside each
    consumer (NUM_STAGES >= 3). BLOCK_M must be 128 (two consumers of 64 rows)."""
    gl.static_assert(BLOCK_M == 2 * CONSUMER_ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    gl.static_assert(SCHEDULE >= 3 and SCHEDULE <= 5, "warp-specialized schedules are 3, 4 and 5")
    dtype: gl.constexpr = Q.dtype.element_ty
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)

    pid_m = gl.program_id(0)
    if CAUSAL_TYPE != 0:
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1)
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    off_hk = off_h // (num_heads_q // num_heads_k)
    start_m = pid_m * BLOCK_M

    q_base = Q + off_z.to(gl.int64) * stride_qz + off_h.to(gl.int64) * stride_qh
    k_base = K + off_z.to(gl.int64) * stride_kz + off_hk.to(gl.int64) * stride_kh
    v_base = V + off_z.to(gl.int64) * stride_vz + off_hk.to(gl.int64) * stride_vh
    o_base = O + off_z.to(gl.int64) * stride_oz + off_h.to(gl.int64) * stride_oh
    q_desc = tma.make_tensor_descriptor(q_base, [seqlen_q, HEAD_DIM], [stride_qm, 1], [BLOCK_M, HEAD_DIM],
                                        smem_layout)
    # K/V and O descriptors are built in the partitions that use them.

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], smem_layout)
    k_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    v_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    # Consumer 0 has the first turn.
    mbarrier.arrive(turn.index(0))

    if CAUSAL_TYPE == 0:
        diag = 0
        hi = seqlen_k
        full_end = (seqlen_k // BLOCK_N) * BLOCK_N
    else:
        if CAUSAL_TYPE == 1:
            diag = 0
        else:
            diag = seqlen_k - seqlen_q
        hi = gl.minimum(gl.minimum(start_m + BLOCK_M, seqlen_q) + diag, seqlen_k)
        hi = gl.maximum(hi, 0)
        first_row_keys = gl.maximum(gl.minimum(start_m + diag + 1, seqlen_k), 0)
        full_end = (first_row_keys // BLOCK_N) * BLOCK_N
    n_tiles = gl.cdiv(hi, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [start_m, 0], q_bar, q_smem)
    lse_base = off_z.to(gl.int64) * stride_lse_z + off_h.to(gl.int64) * stride_lse_h

    # The argument tuples stay inline: a tuple assigned to a variable first
    # turns its constexprs into runtime values.
    gl.warp_specialize([
        (_ws_first_consumer, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                              sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_DIM,
                              CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, SCHEDULE)),
        (_ws_second_consumer, (q_smem, k_ring, v_ring, q_bar, ready, empty, turn, o_base, stride_om, LSE, lse_base,
                               sm_scale, start_m, seqlen_q, seqlen_k, n_tiles, full_end, diag, HEAD_DIM,
                               CAUSAL_TYPE != 0, BLOCK_N, NUM_STAGES, SCHEDULE)),
        (_ws_loader, (k_base, v_base, stride_kn, stride_vn, seqlen_k, k_ring, v_ring, ready, empty, n_tiles,
                      HEAD_DIM, BLOCK_N, NUM_STAGES)),
    ], [4, 1], [232, 40])
