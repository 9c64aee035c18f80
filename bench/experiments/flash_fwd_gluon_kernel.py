"""Experiment: a Gluon (triton.experimental.gluon) flash-attention forward for
Hopper (sm_90), FlashAttention-3 style, to learn whether explicit scheduling
closes the gap to cuDNN that the Triton kernel (tritonsrc/flash/fwd.py) leaves.

What the Triton compiler does not do for us on sm_90 and this kernel does:
- K/V tiles arrive by TMA into a NUM_STAGES-deep shared-memory ring, one
  mbarrier per stage; Q is loaded once by TMA and stays in shared memory.
- SCHEDULE picks how the softmax overlaps the tensor cores (wgmma issued
  asynchronously, waited for with `warpgroup_mma_wait(n)`; Triton 3.6 itself
  waits with 0 outstanding):
    0 serial: every wgmma waited for at once (baseline);
    1 FA3 order: Q K^T of tile j and P V of tile j-1 issued, wait(1) for
      Q K^T only, softmax of tile j while P V still runs;
    2 next-Q K^T: Q K^T of tile j+1 issued, softmax of tile j, P V of tile j
      issued, wait(0): the softmax overlaps a wgmma whose operands are all in
      shared memory (schedule 1 leaves P's registers in flight, and ptxas
      hoists the wait above the exponentials when it reuses them: see
      overlapped_exponentials in flash_fwd_gluon_compile.py).
- P stays in registers as the A operand of P V (no shared-memory round trip).
- exp2 with the softmax scale folded into one FMA per score; masks only on the
  tiles that need them (sequence tail, causal diagonal).
- 8 warps = two consumer warpgroups, 64 query rows each (BLOCK_M = 128).

Semantics follow attn_fwd (fwd.py): Q/K/V/O element (b, h, m, d) at
base + b*stride_z + h*stride_h + m*stride_m + d; GQA through
num_heads_q // num_heads_k; CAUSAL_TYPE 0 none, 1 top-left, 2 bottom-right;
LSE natural log of the scaled scores' exp-sum (-inf, and O = 0, for a row
that sees no key). Batched, unpadded head dims (64, 128) only, no dropout.

TMA descriptors are built on the device (one 2-D descriptor per (batch, head)
and tensor, so the zero fill and the store clipping stop at the sequence's
end): the kernel needs Triton's global scratch (triton.set_allocator under
the JIT; the AOT runtime already passes a scratch pointer).
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

LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, start_n, offs_m, offs_n, seqlen_k, diag, masked,
                  CAUSAL: gl.constexpr):
    """Online-softmax update for one [BLOCK_M, BLOCK_N] score tile; returns the
    unnormalised probabilities, the new running max, sum and the rescale factor
    for the accumulator."""
    if masked:
        cols = gl.expand_dims(start_n + offs_n, 0)
        ok = cols < seqlen_k
        if CAUSAL:
            ok = ok & (cols <= gl.expand_dims(offs_m, 1) + diag)
        s = gl.where(ok, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    # A row that sees no key yet (causal) keeps exp2 arguments finite.
    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_use, 1))
    alpha = gl.exp2(m_i - m_use)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _load_kv(k_desc, v_desc, k_ring, v_ring, ready, tile, n_tiles,
             BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """TMA K and V of key tile `tile` into its ring stage (skipped past the end)."""
    stage = tile % NUM_STAGES
    pred = tile < n_tiles
    bar = ready.index(stage)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(k_desc, [tile * BLOCK_N, 0], bar, k_ring.index(stage), pred=pred)
    tma.async_copy_global_to_shared(v_desc, [tile * BLOCK_N, 0], bar, v_ring.index(stage), pred=pred)


# Sizes and strides stay unspecialised under the JIT (one compile per variant),
# as in the AOT build.
@gluon.jit(do_not_specialize=[
    "stride_qz", "stride_qh", "stride_qm", "stride_kz", "stride_kh", "stride_kn",
    "stride_vz", "stride_vh", "stride_vn", "stride_oz", "stride_oh", "stride_om",
    "stride_lse_z", "stride_lse_h", "num_heads_q", "num_heads_k", "seqlen_q", "seqlen_k"])
def attn_fwd_gluon(
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
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = Q.dtype.element_ty
    # wgmma accumulators: warps stacked along M (16 rows per warp).
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
    # Rows of HEAD_DIM * 2 bytes >= 128: the widest swizzle (fewest TMA/wgmma messages).
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)

    pid_m = gl.program_id(0)
    if CAUSAL_TYPE != 0:
        # Heaviest causal blocks first: shorter tail.
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1)
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    off_hk = off_h // (num_heads_q // num_heads_k)
    start_m = pid_m * BLOCK_M

    # One 2-D descriptor per (batch, head): TMA zero-fills rows past the
    # sequence and clips the O store there.
    q_base = Q + off_z.to(gl.int64) * stride_qz + off_h.to(gl.int64) * stride_qh
    k_base = K + off_z.to(gl.int64) * stride_kz + off_hk.to(gl.int64) * stride_kh
    v_base = V + off_z.to(gl.int64) * stride_vz + off_hk.to(gl.int64) * stride_vh
    o_base = O + off_z.to(gl.int64) * stride_oz + off_h.to(gl.int64) * stride_oh
    q_desc = tma.make_tensor_descriptor(q_base, [seqlen_q, HEAD_DIM], [stride_qm, 1], [BLOCK_M, HEAD_DIM],
                                        smem_layout)
    k_desc = tma.make_tensor_descriptor(k_base, [seqlen_k, HEAD_DIM], [stride_kn, 1], [BLOCK_N, HEAD_DIM],
                                        smem_layout)
    v_desc = tma.make_tensor_descriptor(v_base, [seqlen_k, HEAD_DIM], [stride_vn, 1], [BLOCK_N, HEAD_DIM],
                                        smem_layout)
    o_desc = tma.make_tensor_descriptor(o_base, [seqlen_q, HEAD_DIM], [stride_om, 1], [BLOCK_M, HEAD_DIM],
                                        smem_layout)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], smem_layout)
    k_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    v_ring = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], smem_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)

    # Key range [0, hi) in tiles; tiles from full_end on need a mask.
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
        # Keys seen by the first row are visible to every row of the block.
        first_row_keys = gl.maximum(gl.minimum(start_m + diag + 1, seqlen_k), 0)
        full_end = (first_row_keys // BLOCK_N) * BLOCK_N
    n_tiles = gl.cdiv(hi, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [start_m, 0], q_bar, q_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_kv(k_desc, v_desc, k_ring, v_ring, ready, i, n_tiles, BLOCK_N, NUM_STAGES)

    offs_m = start_m + gl.arange(0, BLOCK_M, layout=row_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=col_layout)
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_layout)
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, layout=row_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)

    if SCHEDULE == 1:
        # FA3 order: softmax of tile j while P V of tile j-1 runs.
        if n_tiles > 0:
            mbarrier.wait(ready.index(0), 0)
            s = warpgroup_mma(q_smem, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False)
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                               full_end <= 0, CAUSAL_TYPE != 0)
            p = gl.convert_layout(p.to(dtype), p_layout)
            for j in range(1, n_tiles):
                stage = j % NUM_STAGES
                prev = (j - 1) % NUM_STAGES
                mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
                s_tok = warpgroup_mma(q_smem, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False,
                                      is_async=True)
                o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
                # wgmma groups retire in order: 1 outstanding = Q K^T done, P V may run on.
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
                p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                        seqlen_k, diag, j * BLOCK_N >= full_end,
                                                        CAUSAL_TYPE != 0)
                acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
                p_next = gl.convert_layout(p_next.to(dtype), p_layout)
                acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
                # Both warpgroups are done with stage `prev` before TMA refills it.
                gl.thread_barrier()
                _load_kv(k_desc, v_desc, k_ring, v_ring, ready, j - 1 + NUM_STAGES, n_tiles, BLOCK_N, NUM_STAGES)
                p = p_next
            last = (n_tiles - 1) % NUM_STAGES
            acc = warpgroup_mma(p, v_ring.index(last), acc)
    elif SCHEDULE == 2:
        # Next Q K^T first: softmax of tile j while Q K^T of tile j+1 runs. Only
        # shared-memory operands and the S accumulator are in flight, so ptxas
        # cannot reuse their registers under the softmax.
        if n_tiles > 0:
            mbarrier.wait(ready.index(0), 0)
            s = warpgroup_mma(q_smem, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False)
            for j in range(0, n_tiles - 1):
                stage = j % NUM_STAGES
                nxt = (j + 1) % NUM_STAGES
                mbarrier.wait(ready.index(nxt), ((j + 1) // NUM_STAGES) & 1)
                s_tok = warpgroup_mma(q_smem, k_ring.index(nxt).permute((1, 0)), s_zero, use_acc=False,
                                      is_async=True)
                p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n, seqlen_k,
                                                   diag, j * BLOCK_N >= full_end, CAUSAL_TYPE != 0)
                acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
                p = gl.convert_layout(p.to(dtype), p_layout)
                o_tok = warpgroup_mma(p, v_ring.index(stage), acc, is_async=True)
                s, acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, o_tok, p))
                gl.thread_barrier()
                _load_kv(k_desc, v_desc, k_ring, v_ring, ready, j + NUM_STAGES, n_tiles, BLOCK_N, NUM_STAGES)
            j = n_tiles - 1
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n, seqlen_k,
                                               diag, j * BLOCK_N >= full_end, CAUSAL_TYPE != 0)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
            p = gl.convert_layout(p.to(dtype), p_layout)
            acc = warpgroup_mma(p, v_ring.index(j % NUM_STAGES), acc)
    else:
        # Serial: every wgmma waited for at once (the baseline).
        for j in range(0, n_tiles):
            stage = j % NUM_STAGES
            mbarrier.wait(ready.index(stage), (j // NUM_STAGES) & 1)
            s = warpgroup_mma(q_smem, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False)
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n, seqlen_k,
                                               diag, j * BLOCK_N >= full_end, CAUSAL_TYPE != 0)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
            p = gl.convert_layout(p.to(dtype), p_layout)
            acc = warpgroup_mma(p, v_ring.index(stage), acc)
            gl.thread_barrier()
            _load_kv(k_desc, v_desc, k_ring, v_ring, ready, j + NUM_STAGES, n_tiles, BLOCK_N, NUM_STAGES)

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(ready.index(i))

    # Rows that saw no key have l = 0: write 0 and lse = -inf, not NaN.
    l_safe = gl.where(l_i == 0.0, 1.0, l_i)
    inv = gl.convert_layout(1.0 / l_safe, gl.SliceLayout(1, o_layout))
    out = (acc * gl.expand_dims(inv, 1)).to(dtype)
    # Q's buffer is free (every wgmma has retired): stage O there for one TMA store.
    q_smem.store(out)
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [start_m, 0], q_smem)

    lse = (m_i + gl.log2(l_i)) * LN2
    lse_ptrs = LSE + off_z.to(gl.int64) * stride_lse_z + off_h.to(gl.int64) * stride_lse_h + offs_m
    gl.store(lse_ptrs, lse, mask=offs_m < seqlen_q)
    tma.store_wait(pendings=0)
