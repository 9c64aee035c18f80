"""The Gluon Hopper backward (bwd_hopper.py) with warp specialization: the
same math and arguments as bwd_dkdv_hopper, split into two partitions.

- MMA partition (the default, num_warps = 8: two warpgroups of 64 keys):
  the five products and the elementwise work of every step, as in
  bwd_dkdv_hopper. It no longer issues TMA or dQ atomics and never waits for
  a refill: at the end of step t it puts dQ_partial (fp32 [BLOCK_M, D]) into
  one of two shared buffers and arrives `done[t % 2]`.
- Worker partition (one warpgroup, few registers): on `done[t % 2]` it
  refills the Q/dO stage step t used with step t + NUM_STAGES's rows (TMA),
  then adds that buffer to the fp32 dQ workspace with atomics and arrives
  `dq_free[t % 2]`, so the MMA warpgroups start step t + 1's products while
  step t's atomics drain.

Registers: 12 warps; the worker's warpgroup gives its registers to the MMA
warpgroups (setmaxnreg), which hold dK, dV, S^T, dP^T and the dQ tile.
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

from .bwd_hopper import LOG2E, _acc_layout, _dq_layout, _load_qdo, _row_block, _store_rows, _tile

WORKER_WARPS = gl.constexpr(4)
WORKER_REGS = gl.constexpr(24)
DQ_BUFFERS = gl.constexpr(2)


@gluon.jit
def _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE: gl.constexpr, BLOCK_M: gl.constexpr):
    """(diag, lo, nblk): rows [lo, seqlen_q) see some of the CTA's keys, in nblk blocks."""
    if CAUSAL_TYPE == 0:
        diag = 0
        lo = 0
    else:
        if CAUSAL_TYPE == 1:
            diag = 0
        else:
            diag = seqlen_k - seqlen_q
        lo = gl.maximum(start_n - diag, 0)
    nblk = gl.cdiv(gl.maximum(seqlen_q - lo, 0), BLOCK_M)
    return diag, lo, nblk


@gluon.jit
def _mma_partition(k_smem, v_smem, q_ring, do_ring, ds_smem, dq_bufs, kv_bar, ready, done, dq_free,
                   DK, DV, LSE, Delta, sm_scale,
                   stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
                   stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
                   num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                   BLOCK_DMODEL: gl.constexpr, CAUSAL_TYPE: gl.constexpr, FUSE_DQ: gl.constexpr,
                   BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = k_smem.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_M)        # [BLOCK_N, BLOCK_M]
    kv_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_DMODEL)  # [BLOCK_N, D]
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=kv_layout, k_width=2)
    dq_layout: gl.constexpr = _dq_layout(NUM_WARPS, BLOCK_M, BLOCK_DMODEL)
    key_axis: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_axis: gl.constexpr = gl.SliceLayout(0, s_layout)
    EARLY_DELTA: gl.constexpr = CAUSAL_TYPE == 0 or BLOCK_DMODEL == 64

    start_n = gl.program_id(0) * BLOCK_N
    bh = gl.program_id(1)
    off_z = bh // num_heads_k
    off_hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    hq_base = off_hk * group
    diag, lo, nblk = _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M)
    n_iters = group * nblk
    tail = start_n + BLOCK_N > seqlen_k

    lse_zbase = LSE + off_z.to(gl.int64) * stride_lse_z
    delta_zbase = Delta + off_z.to(gl.int64) * stride_delta_z
    qk_scale = sm_scale * LOG2E
    offs_n = start_n + gl.arange(0, BLOCK_N, layout=key_axis)
    offs_mb = gl.arange(0, BLOCK_M, layout=row_axis)
    if CAUSAL_TYPE != 0:
        first_row = gl.where(offs_n < seqlen_k, offs_n - diag, 2147483647)
    s_zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=s_layout)
    dk = gl.zeros([BLOCK_N, BLOCK_DMODEL], gl.float32, layout=kv_layout)
    dv = gl.zeros([BLOCK_N, BLOCK_DMODEL], gl.float32, layout=kv_layout)

    mbarrier.wait(kv_bar, 0)
    for t in range(0, n_iters):
        stage = t % NUM_STAGES
        buf = t % DQ_BUFFERS
        head, m0 = _row_block(t, nblk, lo, hq_base, BLOCK_M)
        offs_m = m0 + offs_mb
        m_ok = offs_m < seqlen_q
        lse2 = gl.load(lse_zbase + head.to(gl.int64) * stride_lse_h + offs_m, mask=m_ok, other=float("inf")) * LOG2E
        if EARLY_DELTA:
            delta = gl.load(delta_zbase + head.to(gl.int64) * stride_delta_h + offs_m, mask=m_ok, other=0.0)
        q_tile = q_ring.index(stage)
        do_tile = do_ring.index(stage)
        mbarrier.wait(ready.index(stage), (t // NUM_STAGES) & 1)
        s_tok = warpgroup_mma(k_smem, q_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp_tok = warpgroup_mma(v_smem, do_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
        p = gl.exp2(s * qk_scale - gl.expand_dims(lse2, 0))
        if CAUSAL_TYPE != 0:
            p = gl.where(gl.expand_dims(first_row - m0, 1) <= gl.expand_dims(offs_mb, 0), p, 0.0)
        elif tail:
            p = gl.where(gl.expand_dims(offs_n, 1) < seqlen_k, p, 0.0)
        p_op = gl.convert_layout(p.to(dtype), op_layout)
        if not EARLY_DELTA:
            delta = gl.load(delta_zbase + head.to(gl.int64) * stride_delta_h + offs_m, mask=m_ok, other=0.0)
        dv_tok = warpgroup_mma(p_op, do_tile, dv, is_async=True)
        dp = warpgroup_mma_wait(num_outstanding=1, deps=(dp_tok, ))
        ds = (p * (dp - gl.expand_dims(delta, 0))).to(dtype)
        ds_op = gl.convert_layout(ds, op_layout)
        dk_tok = warpgroup_mma(ds_op, q_tile, dk, is_async=True)
        dv, p_op = warpgroup_mma_wait(num_outstanding=1, deps=(dv_tok, p_op))
        if FUSE_DQ:
            ds_smem.store(ds)
            fence_async_shared()
            gl.thread_barrier()  # both warpgroups' halves of dS^T are in shared memory
            dq_zero = gl.zeros([BLOCK_M, BLOCK_DMODEL], gl.float32, layout=dq_layout)
            dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k_smem, dq_zero, use_acc=False, is_async=True)
            dk, ds_op, dq = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op, dq_tok))
            # The worker has drained this buffer (its use two steps ago); the first use passes.
            mbarrier.wait(dq_free.index(buf), ((t // DQ_BUFFERS) & 1) ^ 1)
            dq_bufs.index(buf).store(dq)
        else:
            dk, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op))
        # Both warpgroups are done with this Q/dO stage, dS^T and the dQ store.
        gl.thread_barrier()
        mbarrier.arrive(done.index(buf))

    offs_kn = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, kv_layout))
    dk_base = DK + off_z.to(gl.int64) * stride_dkz + off_hk.to(gl.int64) * stride_dkh
    dv_base = DV + off_z.to(gl.int64) * stride_dvz + off_hk.to(gl.int64) * stride_dvh
    _store_rows((dk * sm_scale).to(dtype), dk_base, stride_dkn, offs_kn, seqlen_k, BLOCK_DMODEL)
    _store_rows(dv.to(dtype), dv_base, stride_dvn, offs_kn, seqlen_k, BLOCK_DMODEL)


@gluon.jit
def _worker_partition(q_desc, do_desc, q_ring, do_ring, dq_bufs, ready, done, dq_free, DQA,
                      stride_dqa_z, stride_dqa_h, stride_dqa_m, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                      CAUSAL_TYPE: gl.constexpr, FUSE_DQ: gl.constexpr, BLOCK_DMODEL: gl.constexpr,
                      BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Refill step t's stage with step t + NUM_STAGES's rows, then add step t's dQ tile to DQA."""
    W: gl.constexpr = gl.num_warps()
    # 4 consecutive fp32 per thread (one 16-byte vector RED), 8-row chunks
    # (a chunk may not split the buffer's 8-row swizzle pattern).
    TPW_ROWS: gl.constexpr = 32 * 4 // BLOCK_DMODEL
    CHUNK: gl.constexpr = 8
    dq_io: gl.constexpr = gl.BlockedLayout([CHUNK // (W * TPW_ROWS), 4], [TPW_ROWS, BLOCK_DMODEL // 4], [W, 1], [1, 0])
    start_n = gl.program_id(0) * BLOCK_N
    bh = gl.program_id(1)
    off_z = bh // num_heads_k
    off_hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    hq_base = off_hk * group
    diag, lo, nblk = _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M)
    n_iters = group * nblk
    dqa_zbase = DQA + off_z.to(gl.int64) * stride_dqa_z
    rows_c = gl.arange(0, CHUNK, layout=gl.SliceLayout(1, dq_io))
    cols = gl.arange(0, BLOCK_DMODEL, layout=gl.SliceLayout(0, dq_io))
    for t in range(0, n_iters):
        buf = t % DQ_BUFFERS
        mbarrier.wait(done.index(buf), (t // DQ_BUFFERS) & 1)
        _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, t + NUM_STAGES, n_iters, nblk, lo, hq_base,
                  BLOCK_M, NUM_STAGES)
        if FUSE_DQ:
            head, m0 = _row_block(t, nblk, lo, hq_base, BLOCK_M)
            base = dqa_zbase + head.to(gl.int64) * stride_dqa_h
            tile = dq_bufs.index(buf)
            for r in gl.static_range(0, BLOCK_M, CHUNK):
                vals = tile.slice(r, CHUNK).load(dq_io)
                rows = m0 + r + rows_c
                ptrs = base + gl.expand_dims(rows.to(gl.int64) * stride_dqa_m, 1) + gl.expand_dims(cols, 0)
                gl.atomic_add(ptrs, vals, mask=gl.expand_dims(rows < seqlen_q, 1), sem="relaxed")
            gl.thread_barrier()  # every worker warp has read the buffer
            mbarrier.arrive(dq_free.index(buf))


@gluon.jit(do_not_specialize=["seqlen_q", "seqlen_k", "num_heads_q", "num_heads_k", "stride_lse_z", "stride_lse_h",
                              "stride_delta_z", "stride_delta_h"])
def bwd_dkdv_hopper_ws(
    q_desc, k_desc, v_desc, do_desc,
    DK, DV, DQA, LSE, Delta,
    sm_scale,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
    stride_dqa_z, stride_dqa_h, stride_dqa_m,
    stride_lse_z, stride_lse_h,
    stride_delta_z, stride_delta_h,
    num_heads_q, num_heads_k, seqlen_q, seqlen_k,
    BLOCK_DMODEL: gl.constexpr, CAUSAL_TYPE: gl.constexpr, FUSE_DQ: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
):
    """bwd_dkdv_hopper's contract (grid, descriptors, buffers); launch with num_warps = 8."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert(NUM_WARPS == 8, "two MMA warpgroups")
    gl.static_assert(BLOCK_N == 16 * NUM_WARPS, "each warp owns 16 keys")
    gl.static_assert(BLOCK_DMODEL == 64 or BLOCK_DMODEL == 128, "head dim 64 or 128")
    dtype: gl.constexpr = q_desc.dtype
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    # fp32 dQ tiles: 2-element vectors (the accumulator's pairs) swizzled over 8 rows.
    dq_smem_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=2, per_phase=1, max_phase=8, order=[1, 0])

    start_n = gl.program_id(0) * BLOCK_N
    bh = gl.program_id(1)
    off_z = bh // num_heads_k
    off_hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    hq_base = off_hk * group
    diag, lo, nblk = _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M)
    n_iters = group * nblk

    k_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    v_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    q_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    do_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    ds_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_M], smem_layout)
    dq_bufs = gl.allocate_shared_memory(gl.float32, [DQ_BUFFERS, BLOCK_M, BLOCK_DMODEL], dq_smem_layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    done = gl.allocate_shared_memory(gl.int64, [DQ_BUFFERS, 1], mbarrier.MBarrierLayout())
    dq_free = gl.allocate_shared_memory(gl.int64, [DQ_BUFFERS, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
    for i in gl.static_range(DQ_BUFFERS):
        mbarrier.init(done.index(i), count=1)
        mbarrier.init(dq_free.index(i), count=1)
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(k_smem, k_desc))
    tma.async_copy_global_to_shared(v_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(v_smem, v_desc))
    for i in gl.static_range(NUM_STAGES):
        _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, i, n_iters, nblk, lo, hq_base, BLOCK_M, NUM_STAGES)

    gl.warp_specialize([
        (_mma_partition, (k_smem, v_smem, q_ring, do_ring, ds_smem, dq_bufs, kv_bar, ready, done, dq_free,
                          DK, DV, LSE, Delta, sm_scale,
                          stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
                          stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
                          num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                          BLOCK_DMODEL, CAUSAL_TYPE, FUSE_DQ, BLOCK_M, BLOCK_N, NUM_STAGES)),
        (_worker_partition, (q_desc, do_desc, q_ring, do_ring, dq_bufs, ready, done, dq_free, DQA,
                             stride_dqa_z, stride_dqa_h, stride_dqa_m, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                             CAUSAL_TYPE, FUSE_DQ, BLOCK_DMODEL, BLOCK_M, BLOCK_N, NUM_STAGES)),
    ], [WORKER_WARPS], [WORKER_REGS])
