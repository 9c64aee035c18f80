"""Flash attention backward for Hopper (sm_90), written in Gluon: dK and dV
(and optionally dQ by fp32 atomics) with TMA, wgmma and mbarriers
(FlashAttention-3's backward). In the AOT
build as bwd_dkdv_hopper (python/rules_flash_hopper.py; v2src/ops/flash_bwd.cc
routes batched fp16/bf16 head dim 64 / 128 calls to it on sm_90; FUSE_DQ when
the caller passes a dQ workspace); python/jit/flash_bwd_hopper.py launches it
through the JIT (bench/experiments/flash_bwd_hopper.py).

One CTA owns BLOCK_N keys of one (batch, kv head): K and V arrive once by
TMA, then it walks the query heads of its GQA group and the query blocks of
BLOCK_M rows that see its keys, with Q and dO double-buffered through a
NUM_STAGES-deep TMA ring. It works on the transposed problem (keys x rows),
so the two accumulators come straight out of wgmma with the register
operand on the left:
    S^T  = K Q^T          (smem x smem)      [BLOCK_N, BLOCK_M]
    dP^T = V dO^T         (smem x smem)
    P^T  = exp2(S^T * scale * log2e - LSE * log2e)   (LSE is natural-log)
    dV  += P^T dO         (registers x smem) [BLOCK_N, D]
    dS^T = P^T * (dP^T - Delta)
    dK  += dS^T Q         (registers x smem)
    FUSE_DQ: dS^T goes to shared memory and dQ_partial = dS K (the
    transposed smem operand x K) is added to an fp32 [B, S, H, D] buffer with
    atomics (without sm_scale: bwd_dq_convert.py applies it).
With num_warps = 8 the accumulator layouts stack the warps along the key
axis, so each of the two warpgroups owns 64 keys and issues its own wgmma
(the dQ product, M = BLOCK_M rows, splits its N across the warpgroups
instead). S^T and dP^T are issued together and dV's and dK's products run
while the next elementwise step computes (async wgmma).

SCHEDULE (a tuning parameter):
  0 one partition: the MMA warpgroups also refill the Q/dO ring (after a
    CTA-wide barrier) and issue the dQ atomics themselves.
  1 warp-specialized: the MMA warpgroups (the default partition, 240
    registers by setmaxnreg) put dQ_partial into one of two fp32 shared
    buffers and arrive `done[t % 2]`; a worker warpgroup (24 registers)
    refills step t's stage with step t + NUM_STAGES's rows by TMA, then adds
    the buffer to the dQ workspace with 16-byte atomics and arrives
    `dq_free`, so the next step's products start while the atomics drain.
    +3-17% over 0 on the H200 (bench/results/flash_bwd_hopper_ws_sm90.json).

Masks: TMA zero-fills rows past the sequences; query rows past seqlen_q get
LSE = +inf (P = 0), key rows past seqlen_k are dropped from P only where they
reach dQ (their dK/dV rows are never stored); the causal mask (key n seen by
row m iff n <= m + diag, diag 0 top-left / seqlen_k - seqlen_q bottom-right)
is one compare per element on every causal step (branch-free: the branchy
form cost registers and spilled). Rows that see none of this CTA's keys are
skipped (they include every row with LSE = -inf).
"""
from triton.experimental import gluon
from triton.runtime.jit import constexpr_function
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

LOG2E = gl.constexpr(1.4426950408889634)
# SCHEDULE 1: one worker warpgroup at 24 registers, so that the two MMA
# warpgroups get 240 (setmaxnreg; 32 for the worker would leave them 232,
# and the head dim 128 step spills at 232).
WORKER_WARPS = gl.constexpr(4)
WORKER_REGS = gl.constexpr(24)
DQ_BUFFERS = gl.constexpr(2)  # dQ tiles in flight between the MMA warpgroups and the worker


@constexpr_function
def _acc_layout(num_warps, width):
    """A wgmma accumulator [rows, width]: warps stacked along M, 16 rows each."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, width, 16])


@constexpr_function
def _dq_layout(num_warps, rows, width):
    """dQ [rows, width]: one warpgroup per 64 rows, the rest split the columns."""
    wm = min(num_warps, rows // 16)
    wn = num_warps // wm
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[wm, wn], instr_shape=[16, width // wn, 16])


@gluon.jit
def _tile(smem, desc):
    """The 2-D [rows, D] shared-memory tile seen as the descriptor's box [1, 1, D/64, rows, 64]."""
    return smem._reinterpret(desc.dtype, desc.block_type.shape, desc.layout)


@gluon.jit
def _row_block(t, nblk, lo, hq_base, BLOCK_M: gl.constexpr):
    """Step t of the flat (query head, row block) loop: (head, first row)."""
    g = t // nblk
    return hq_base + g, lo + (t - g * nblk) * BLOCK_M


@gluon.jit
def _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, t, n_iters, nblk, lo, hq_base,
              BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    """TMA the Q and dO rows of step t into its ring stage (nothing past the end)."""
    stage = t % NUM_STAGES
    pred = t < n_iters
    head, m0 = _row_block(t, nblk, lo, hq_base, BLOCK_M)
    bar = ready.index(stage)
    mbarrier.expect(bar, q_desc.block_type.nbytes + do_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(q_desc, [off_z, head, 0, m0, 0], bar, _tile(q_ring.index(stage), q_desc),
                                    pred=pred)
    tma.async_copy_global_to_shared(do_desc, [off_z, head, 0, m0, 0], bar, _tile(do_ring.index(stage), do_desc),
                                    pred=pred)


@gluon.jit
def _store_rows(val, base, stride, offs, limit, WIDTH: gl.constexpr):
    """Rows offs of val (an accumulator layout) to base + row * stride + col, masked at limit."""
    rows = gl.convert_layout(offs, gl.SliceLayout(1, val.type.layout))
    cols = gl.arange(0, WIDTH, layout=gl.SliceLayout(0, val.type.layout))
    ptrs = base + gl.expand_dims(rows.to(gl.int64) * stride, 1) + gl.expand_dims(cols, 0)
    gl.store(ptrs, val, mask=gl.expand_dims(rows < limit, 1))


@gluon.jit
def _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE: gl.constexpr, BLOCK_M: gl.constexpr):
    """(diag, lo, nblk): rows [lo, seqlen_q) see some of the keys from start_n, in nblk blocks;
    blocks from m0 with start_n + BLOCK_N - 1 > m0 + diag cross the causal diagonal."""
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
def _key_block(num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE: gl.constexpr, BLOCK_M: gl.constexpr,
               BLOCK_N: gl.constexpr):
    """This CTA's keys and walk: (start_n, off_z, off_hk, hq_base, diag, lo, nblk, n_iters)."""
    start_n = gl.program_id(0) * BLOCK_N
    bh = gl.program_id(1)
    off_z = bh // num_heads_k
    off_hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    diag, lo, nblk = _geometry(start_n, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M)
    return start_n, off_z, off_hk, off_hk * group, diag, lo, nblk, group * nblk


@gluon.jit
def _add_dq_rows(dq, base, stride_m, rows, cols, seqlen_q):
    """dQ_partial rows (any layout matching rows/cols) added to the fp32 buffer base + row * stride_m + col."""
    ptrs = base + gl.expand_dims(rows.to(gl.int64) * stride_m, 1) + gl.expand_dims(cols, 0)
    gl.atomic_add(ptrs, dq, mask=gl.expand_dims(rows < seqlen_q, 1), sem="relaxed")


@gluon.jit
def _mma_steps(q_desc, do_desc, k_smem, v_smem, q_ring, do_ring, ds_smem, dq_bufs, lse_ring, delta_ring, kv_bar,
               ready, done, dq_free, DK, DV, DQA, LSE, Delta, sm_scale,
               stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
               stride_dqa_z, stride_dqa_h, stride_dqa_m,
               stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
               num_heads_q, num_heads_k, seqlen_q, seqlen_k,
               BLOCK_DMODEL: gl.constexpr, CAUSAL_TYPE: gl.constexpr, FUSE_DQ: gl.constexpr,
               BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, SCHEDULE: gl.constexpr):
    """Every step's products and elementwise work, then dK/dV out.
    SCHEDULE 0: this code also loads each step's LSE and Delta rows, refills
    the ring and adds dQ with atomics (dq_bufs, lse_ring, delta_ring, done and
    dq_free unused). SCHEDULE 1 (the warp-specialized default partition): the
    worker puts LSE and Delta into lse_ring / delta_ring with the stage, and
    this code hands dQ to the worker through dq_bufs and arrives `done`."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = k_smem.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_M)        # [BLOCK_N, BLOCK_M]
    kv_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_DMODEL)  # [BLOCK_N, D]
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=kv_layout, k_width=2)
    dq_layout: gl.constexpr = _dq_layout(NUM_WARPS, BLOCK_M, BLOCK_DMODEL)
    key_axis: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_axis: gl.constexpr = gl.SliceLayout(0, s_layout)
    # Delta's load latency hides under the step's first wgmma when its 16
    # registers fit; causal head dim 128 (the mask's registers) loads it
    # after P instead, under dV's wgmma, or it spills.
    EARLY_DELTA: gl.constexpr = CAUSAL_TYPE == 0 or BLOCK_DMODEL == 64

    start_n, off_z, off_hk, hq_base, diag, lo, nblk, n_iters = _key_block(
        num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
    tail = start_n + BLOCK_N > seqlen_k
    lse_zbase = LSE + off_z.to(gl.int64) * stride_lse_z
    delta_zbase = Delta + off_z.to(gl.int64) * stride_delta_z
    dqa_zbase = DQA + off_z.to(gl.int64) * stride_dqa_z
    qk_scale = sm_scale * LOG2E
    offs_n = start_n + gl.arange(0, BLOCK_N, layout=key_axis)
    offs_mb = gl.arange(0, BLOCK_M, layout=row_axis)
    if CAUSAL_TYPE != 0:
        # The first query row that sees key n (keys past seqlen_k: none).
        first_row = gl.where(offs_n < seqlen_k, offs_n - diag, 2147483647)
    dq_rows = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, dq_layout))
    dq_cols = gl.arange(0, BLOCK_DMODEL, layout=gl.SliceLayout(0, dq_layout))
    s_zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=s_layout)
    dk = gl.zeros([BLOCK_N, BLOCK_DMODEL], gl.float32, layout=kv_layout)
    dv = gl.zeros([BLOCK_N, BLOCK_DMODEL], gl.float32, layout=kv_layout)

    mbarrier.wait(kv_bar, 0)
    for t in range(0, n_iters):
        stage = t % NUM_STAGES
        head, m0 = _row_block(t, nblk, lo, hq_base, BLOCK_M)
        offs_m = m0 + offs_mb
        m_ok = offs_m < seqlen_q
        if SCHEDULE == 0:
            lse2 = gl.load(lse_zbase + head.to(gl.int64) * stride_lse_h + offs_m, mask=m_ok,
                           other=float("inf")) * LOG2E
            if EARLY_DELTA:
                delta = gl.load(delta_zbase + head.to(gl.int64) * stride_delta_h + offs_m, mask=m_ok, other=0.0)
        q_tile = q_ring.index(stage)
        do_tile = do_ring.index(stage)
        mbarrier.wait(ready.index(stage), (t // NUM_STAGES) & 1)
        s_tok = warpgroup_mma(k_smem, q_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dp_tok = warpgroup_mma(v_smem, do_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
        if SCHEDULE == 1:
            lse2 = lse_ring.index(stage).load(row_axis)
        p = gl.exp2(s * qk_scale - gl.expand_dims(lse2, 0))
        if CAUSAL_TYPE != 0:
            # Branch-free, one threshold per key row (few registers): row m0 + i sees key n iff first_row[n] - m0 <= i.
            p = gl.where(gl.expand_dims(first_row - m0, 1) <= gl.expand_dims(offs_mb, 0), p, 0.0)
        elif tail:
            p = gl.where(gl.expand_dims(offs_n, 1) < seqlen_k, p, 0.0)
        p_op = gl.convert_layout(p.to(dtype), op_layout)
        if SCHEDULE == 1:
            delta = delta_ring.index(stage).load(row_axis)
        elif not EARLY_DELTA:
            delta = gl.load(delta_zbase + head.to(gl.int64) * stride_delta_h + offs_m, mask=m_ok, other=0.0)
        dv_tok = warpgroup_mma(p_op, do_tile, dv, is_async=True)
        dp = warpgroup_mma_wait(num_outstanding=1, deps=(dp_tok, ))
        ds = (p * (dp - gl.expand_dims(delta, 0))).to(dtype)
        ds_op = gl.convert_layout(ds, op_layout)
        dk_tok = warpgroup_mma(ds_op, q_tile, dk, is_async=True)
        # dV's product is done (it was issued first): its register operand dies here.
        dv, p_op = warpgroup_mma_wait(num_outstanding=1, deps=(dv_tok, p_op))
        if FUSE_DQ:
            ds_smem.store(ds)
            fence_async_shared()
            gl.thread_barrier()  # both warpgroups' halves of dS^T are in shared memory
            dq_zero = gl.zeros([BLOCK_M, BLOCK_DMODEL], gl.float32, layout=dq_layout)
            dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k_smem, dq_zero, use_acc=False, is_async=True)
            dk, ds_op, dq = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op, dq_tok))
            if SCHEDULE == 0:
                _add_dq_rows(dq, dqa_zbase + head.to(gl.int64) * stride_dqa_h, stride_dqa_m, m0 + dq_rows, dq_cols,
                             seqlen_q)
            else:
                # The worker has drained this buffer (its use DQ_BUFFERS steps ago); the first use passes.
                buf = t % DQ_BUFFERS
                mbarrier.wait(dq_free.index(buf), ((t // DQ_BUFFERS) & 1) ^ 1)
                dq_bufs.index(buf).store(dq)
        else:
            dk, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op))
        # Every warpgroup is done with this Q/dO stage (and dS^T, and its dQ store).
        gl.thread_barrier()
        if SCHEDULE == 0:
            _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, t + NUM_STAGES, n_iters, nblk, lo, hq_base,
                      BLOCK_M, NUM_STAGES)
        else:
            mbarrier.arrive(done.index(t % DQ_BUFFERS))

    offs_kn = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, kv_layout))
    dk_base = DK + off_z.to(gl.int64) * stride_dkz + off_hk.to(gl.int64) * stride_dkh
    dv_base = DV + off_z.to(gl.int64) * stride_dvz + off_hk.to(gl.int64) * stride_dvh
    _store_rows((dk * sm_scale).to(dtype), dk_base, stride_dkn, offs_kn, seqlen_k, BLOCK_DMODEL)
    _store_rows(dv.to(dtype), dv_base, stride_dvn, offs_kn, seqlen_k, BLOCK_DMODEL)


@gluon.jit
def _worker_load(q_desc, do_desc, q_ring, do_ring, ready, LSE, Delta, stride_lse_z, stride_lse_h, stride_delta_z,
                 stride_delta_h, off_z, u, n_iters, nblk, lo, hq_base, seqlen_q, row_io: gl.constexpr,
                 BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Step u's Q/dO by TMA into its stage (the expect is ready's first
    arrival) and its LSE * log2(e) / Delta rows into registers (nothing past the end)."""
    _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, u, n_iters, nblk, lo, hq_base, BLOCK_M, NUM_STAGES)
    head, m0 = _row_block(u, nblk, lo, hq_base, BLOCK_M)
    offs_m = m0 + gl.arange(0, BLOCK_M, layout=row_io)
    ok = (offs_m < seqlen_q) & (u < n_iters)
    lse = gl.load(LSE + off_z.to(gl.int64) * stride_lse_z + head.to(gl.int64) * stride_lse_h + offs_m, mask=ok,
                  other=float("inf")) * LOG2E
    delta = gl.load(Delta + off_z.to(gl.int64) * stride_delta_z + head.to(gl.int64) * stride_delta_h + offs_m,
                    mask=ok, other=0.0)
    return lse, delta


@gluon.jit
def _worker_rows_ready(lse_ring, delta_ring, ready, lse, delta, u, n_iters, NUM_STAGES: gl.constexpr):
    """Step u's rows into its stage's slots; ready's second arrival (after every worker warp stored)."""
    stage = u % NUM_STAGES
    lse_ring.index(stage).store(lse)
    delta_ring.index(stage).store(delta)
    gl.thread_barrier()
    mbarrier.arrive(ready.index(stage), pred=u < n_iters)


@gluon.jit
def _worker(q_desc, do_desc, q_ring, do_ring, dq_bufs, lse_ring, delta_ring, ready, done, dq_free, DQA, LSE, Delta,
            stride_dqa_z, stride_dqa_h, stride_dqa_m, stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
            num_heads_q, num_heads_k, seqlen_q, seqlen_k,
            CAUSAL_TYPE: gl.constexpr, FUSE_DQ: gl.constexpr, BLOCK_DMODEL: gl.constexpr,
            BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """SCHEDULE 1's worker warpgroup: it fills the first NUM_STAGES stages;
    when step t is done it refills t's stage with step t + NUM_STAGES (Q/dO by
    TMA, LSE and Delta rows), and adds step t's dQ tile to DQA."""
    W: gl.constexpr = gl.num_warps()
    # 4 consecutive fp32 per thread (one 16-byte vector RED), 8-row chunks
    # (a chunk may not split the buffer's 8-row swizzle pattern).
    TPW_ROWS: gl.constexpr = 32 * 4 // BLOCK_DMODEL
    CHUNK: gl.constexpr = 8
    dq_io: gl.constexpr = gl.BlockedLayout([CHUNK // (W * TPW_ROWS), 4], [TPW_ROWS, BLOCK_DMODEL // 4], [W, 1], [1, 0])
    row_io: gl.constexpr = gl.BlockedLayout([1], [32], [W], [0])
    start_n, off_z, off_hk, hq_base, diag, lo, nblk, n_iters = _key_block(
        num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
    dqa_zbase = DQA + off_z.to(gl.int64) * stride_dqa_z
    rows_c = gl.arange(0, CHUNK, layout=gl.SliceLayout(1, dq_io))
    cols = gl.arange(0, BLOCK_DMODEL, layout=gl.SliceLayout(0, dq_io))
    for first in gl.static_range(NUM_STAGES):
        lse, delta = _worker_load(q_desc, do_desc, q_ring, do_ring, ready, LSE, Delta, stride_lse_z, stride_lse_h,
                                  stride_delta_z, stride_delta_h, off_z, first, n_iters, nblk, lo, hq_base, seqlen_q,
                                  row_io, BLOCK_M, NUM_STAGES)
        _worker_rows_ready(lse_ring, delta_ring, ready, lse, delta, first, n_iters, NUM_STAGES)
    for t in range(0, n_iters):
        buf = t % DQ_BUFFERS
        mbarrier.wait(done.index(buf), (t // DQ_BUFFERS) & 1)
        # The rows' load latency hides under this step's atomics.
        u = t + NUM_STAGES
        lse, delta = _worker_load(q_desc, do_desc, q_ring, do_ring, ready, LSE, Delta, stride_lse_z, stride_lse_h,
                                  stride_delta_z, stride_delta_h, off_z, u, n_iters, nblk, lo, hq_base, seqlen_q,
                                  row_io, BLOCK_M, NUM_STAGES)
        if FUSE_DQ:
            head, m0 = _row_block(t, nblk, lo, hq_base, BLOCK_M)
            base = dqa_zbase + head.to(gl.int64) * stride_dqa_h
            for r in gl.static_range(0, BLOCK_M, CHUNK):
                _add_dq_rows(dq_bufs.index(buf).slice(r, CHUNK).load(dq_io), base, stride_dqa_m, m0 + r + rows_c,
                             cols, seqlen_q)
        # (its barrier also covers the dQ buffer's reads)
        _worker_rows_ready(lse_ring, delta_ring, ready, lse, delta, u, n_iters, NUM_STAGES)
        if FUSE_DQ:
            mbarrier.arrive(dq_free.index(buf))


# Lengths, head counts and LSE/Delta strides stay runtime values (no
# divisibility or ==1 specialization): one JIT compile serves every shape;
# the dK/dV/dQ-buffer strides keep theirs (the fp32 REDs pair up on them).
@gluon.jit(do_not_specialize=["seqlen_q", "seqlen_k", "num_heads_q", "num_heads_k", "stride_lse_z", "stride_lse_h",
                              "stride_delta_z", "stride_delta_h"])
def bwd_dkdv_hopper(
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
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
):
    """Grid (cdiv(seqlen_k, BLOCK_N), batch * num_heads_k); BLOCK_N = 16 * num_warps.
    q/k/v/do_desc: 5-D TMA descriptors over [B, H, D/64, S, 64] views of
    [B, S, H, D] tensors, boxes [1, 1, D/64, BLOCK_M or BLOCK_N, 64].
    DK/DV + b*stride_z + h*stride_h + n*stride_n + d (element type of Q);
    DQA (FUSE_DQ: fp32, zero on entry) + b*stride_dqa_z + h*stride_dqa_h + m*stride_dqa_m + d;
    LSE / Delta (fp32, natural-log LSE and rowsum(dO * O)) + b*stride_z + h*stride_h + m.
    SCHEDULE 0: one partition; 1: warp-specialized (num_warps 8, plus a worker warpgroup)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert(BLOCK_N == 16 * NUM_WARPS, "each warp owns 16 keys")
    gl.static_assert(BLOCK_DMODEL == 64 or BLOCK_DMODEL == 128, "head dim 64 or 128")
    gl.static_assert(SCHEDULE == 0 or (SCHEDULE == 1 and NUM_WARPS == 8), "schedules: 0, 1 (two MMA warpgroups)")
    dtype: gl.constexpr = q_desc.dtype
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)

    start_n, off_z, off_hk, hq_base, diag, lo, nblk, n_iters = _key_block(
        num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
    k_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    v_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    q_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    do_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    ds_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_M], smem_layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        # SCHEDULE 1: the TMA's expect and the worker's LSE/Delta rows.
        mbarrier.init(ready.index(i), count=1 + SCHEDULE)
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(k_smem, k_desc))
    tma.async_copy_global_to_shared(v_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(v_smem, v_desc))

    if SCHEDULE == 0:
        for i in gl.static_range(NUM_STAGES):
            _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, i, n_iters, nblk, lo, hq_base, BLOCK_M,
                      NUM_STAGES)
        # dq_bufs / lse_ring / delta_ring / done / dq_free are not used by this schedule: stand-ins.
        _mma_steps(q_desc, do_desc, k_smem, v_smem, q_ring, do_ring, ds_smem, ds_smem, ds_smem, ds_smem, kv_bar, ready,
                   ready, ready,
                   DK, DV, DQA, LSE, Delta, sm_scale,
                   stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
                   stride_dqa_z, stride_dqa_h, stride_dqa_m,
                   stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
                   num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                   BLOCK_DMODEL, CAUSAL_TYPE, FUSE_DQ, BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE)
    else:
        # fp32 dQ tiles: 2-element vectors (the accumulator's pairs) swizzled over 8 rows.
        dq_smem_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=2, per_phase=1, max_phase=8, order=[1, 0])
        dq_bufs = gl.allocate_shared_memory(gl.float32, [DQ_BUFFERS, BLOCK_M, BLOCK_DMODEL], dq_smem_layout)
        # Per stage: LSE * log2(e) and Delta of the step's rows.
        rows_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])  # of one stage
        lse_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], rows_layout)
        delta_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], rows_layout)
        done = gl.allocate_shared_memory(gl.int64, [DQ_BUFFERS, 1], mbarrier.MBarrierLayout())
        dq_free = gl.allocate_shared_memory(gl.int64, [DQ_BUFFERS, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(DQ_BUFFERS):
            mbarrier.init(done.index(i), count=1)
            mbarrier.init(dq_free.index(i), count=1)
        # The argument tuples stay inline: a tuple assigned to a variable
        # first turns its constexprs into runtime values.
        gl.warp_specialize([
            (_mma_steps, (q_desc, do_desc, k_smem, v_smem, q_ring, do_ring, ds_smem, dq_bufs, lse_ring, delta_ring,
                          kv_bar, ready, done, dq_free, DK, DV, DQA, LSE, Delta, sm_scale,
                          stride_dkz, stride_dkh, stride_dkn, stride_dvz, stride_dvh, stride_dvn,
                          stride_dqa_z, stride_dqa_h, stride_dqa_m,
                          stride_lse_z, stride_lse_h, stride_delta_z, stride_delta_h,
                          num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                          BLOCK_DMODEL, CAUSAL_TYPE, FUSE_DQ, BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE)),
            (_worker, (q_desc, do_desc, q_ring, do_ring, dq_bufs, lse_ring, delta_ring, ready, done, dq_free, DQA, LSE,
                       Delta, stride_dqa_z, stride_dqa_h, stride_dqa_m, stride_lse_z, stride_lse_h, stride_delta_z,
                       stride_delta_h, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
                       CAUSAL_TYPE, FUSE_DQ, BLOCK_DMODEL, BLOCK_M, BLOCK_N, NUM_STAGES)),
        ], [WORKER_WARPS], [WORKER_REGS])
