"""Flash attention backward for Hopper (sm_90), written in Gluon: dK and dV
(and optionally dQ by fp32 atomics) with TMA, wgmma and mbarriers
(FlashAttention-3's backward, without warp specialization yet). In the AOT
build as bwd_dkdv_hopper (python/rules_flash_hopper.py; v2src/ops/flash_bwd.cc
routes batched fp16/bf16 head dim 64 / 128 calls to it on sm_90; FUSE_DQ when
the caller passes a dQ workspace); bwd_hopper_jit.py launches it through the JIT
(bench/experiments/flash_bwd_hopper.py).

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
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr,
):
    """Grid (cdiv(seqlen_k, BLOCK_N), batch * num_heads_k); BLOCK_N = 16 * num_warps.
    q/k/v/do_desc: 5-D TMA descriptors over [B, H, D/64, S, 64] views of
    [B, S, H, D] tensors, boxes [1, 1, D/64, BLOCK_M or BLOCK_N, 64].
    DK/DV + b*stride_z + h*stride_h + n*stride_n + d (element type of Q);
    DQA (FUSE_DQ: fp32, zero on entry) + b*stride_dqa_z + h*stride_dqa_h + m*stride_dqa_m + d;
    LSE / Delta (fp32, natural-log LSE and rowsum(dO * O)) + b*stride_z + h*stride_h + m."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert(BLOCK_N == 16 * NUM_WARPS, "each warp owns 16 keys")
    gl.static_assert(BLOCK_DMODEL == 64 or BLOCK_DMODEL == 128, "head dim 64 or 128")
    dtype: gl.constexpr = q_desc.dtype
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
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

    start_n = gl.program_id(0) * BLOCK_N
    bh = gl.program_id(1)
    off_z = bh // num_heads_k
    off_hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    hq_base = off_hk * group

    # Rows [lo, seqlen_q) see some of our keys; blocks from m0 with
    # start_n + BLOCK_N - 1 > m0 + diag cross the causal diagonal.
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
    n_iters = group * nblk
    tail = start_n + BLOCK_N > seqlen_k

    k_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    v_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_DMODEL], smem_layout)
    q_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    do_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, BLOCK_DMODEL], smem_layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(k_smem, k_desc))
    tma.async_copy_global_to_shared(v_desc, [off_z, off_hk, 0, start_n, 0], kv_bar, _tile(v_smem, v_desc))
    for i in gl.static_range(NUM_STAGES):
        _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, i, n_iters, nblk, lo, hq_base, BLOCK_M, NUM_STAGES)
    if FUSE_DQ:
        ds_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, BLOCK_M], smem_layout)

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
            # Branch-free, one threshold per key row (few registers): row m0 + i sees key n iff first_row[n] - m0 <= i.
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
        # dV's product is done (it was issued first): its register operand dies here.
        dv, p_op = warpgroup_mma_wait(num_outstanding=1, deps=(dv_tok, p_op))
        if FUSE_DQ:
            ds_smem.store(ds)
            fence_async_shared()
            gl.thread_barrier()  # both warpgroups' halves of dS^T are in shared memory
            dq_zero = gl.zeros([BLOCK_M, BLOCK_DMODEL], gl.float32, layout=dq_layout)
            dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k_smem, dq_zero, use_acc=False, is_async=True)
            dk, ds_op, dq = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op, dq_tok))
            rows = m0 + dq_rows
            ptrs = dqa_zbase + head.to(gl.int64) * stride_dqa_h + gl.expand_dims(rows.to(gl.int64) * stride_dqa_m, 1) \
                + gl.expand_dims(dq_cols, 0)
            gl.atomic_add(ptrs, dq, mask=gl.expand_dims(rows < seqlen_q, 1), sem="relaxed")
        else:
            dk, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dk_tok, ds_op))
        # Every warpgroup is done reading this stage (and dS^T) before TMA refills it.
        gl.thread_barrier()
        _load_qdo(q_desc, do_desc, q_ring, do_ring, ready, off_z, t + NUM_STAGES, n_iters, nblk, lo, hq_base,
                  BLOCK_M, NUM_STAGES)

    offs_kn = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, kv_layout))
    dk_base = DK + off_z.to(gl.int64) * stride_dkz + off_hk.to(gl.int64) * stride_dkh
    dv_base = DV + off_z.to(gl.int64) * stride_dvz + off_hk.to(gl.int64) * stride_dvh
    _store_rows((dk * sm_scale).to(dtype), dk_base, stride_dkn, offs_kn, seqlen_k, BLOCK_DMODEL)
    _store_rows(dv.to(dtype), dv_base, stride_dvn, offs_kn, seqlen_k, BLOCK_DMODEL)
