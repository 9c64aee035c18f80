"""The MoE grouped GEMM for Hopper (sm_90), written in Gluon: CUTLASS's
"cooperative" warp-specialized schedule on one 128 x BLOCK_N tile per CTA.

Same contract as fused_moe_kernel (grouped_gemm.py) with QUANT 0, ALIGNED,
BLOCK_SIZE_M 128, for the calls v2src/ops/moe_gemm_hopper.cc routes here:
C[slot, :] = (A[slot // top_k, :] @ B[expert(slot)]^T) [* topk_weights[slot]]
for every slot in sorted_token_ids (moe_align with block_size 128). Sentinel
and negative slots are neither read nor written; a block whose expert id is
outside [0, num_experts) writes zeros to its rows and reads no weights.
fp16 / bf16, fp32 accumulation.

Partitions (gl.warp_specialize; launch with num_warps=4):
- two consumer warpgroups (the default partition and a 4-warp worker), 64
  rows of the tile each, sharing the B stage: wgmma only, one in flight; a
  stage is released once the wgmma that read it retired;
- a 1-warp B loader: TMA over the weights viewed as [E * N, K] (host-side
  descriptor, box [BLOCK_N, BLOCK_K]; a tile past an expert's N rows reads
  the next expert's rows, which only land in columns the store masks; K
  tails and the last expert's tail are zero-filled by TMA);
- a 2-warp A gatherer: the block's rows (token slot // top_k) by 16-byte
  cp.async, masked rows and K tails zero-filled.
No CTA-wide barrier in the main loop: loads run NUM_STAGES tiles ahead of
the tensor cores. Measured on the H200 (bench/results/
moe_gemm_gluon_experiment_sm90.json, variant gluon_ws): 1.02-1.07x
torch._grouped_mm on the Mixtral-like layer at M=512, 0.97-0.99x at M=4096,
1.05-1.3x the Triton kernel at block size 128.

Needs: K, N, stride_am, stride_cm multiples of 16, A and C 16-byte aligned
(the rule's ":16" hints, checked by the launcher), B a TMA operand.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

ROWS = gl.constexpr(64)  # rows per consumer warpgroup (BLOCK_M is two of them)
GATHER_WARPS = gl.constexpr(2)  # 4 would leave ptxas 128 registers for the 64 x 256 wgmma


@gluon.jit
def _grouped_tile(EM, N, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr):
    """(pid_m, pid_n) of this program in grouped order: GROUP_M M blocks share each N column of B in L2."""
    num_pid_m = gl.cdiv(EM, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_pid_n
    pid = gl.program_id(0)
    first_m = (pid // in_group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % in_group) % group_m, (pid % in_group) // group_m


@gluon.jit
def _stage_barriers(NUM_STAGES: gl.constexpr):
    """Per stage: A landed (every gatherer thread arrives), B landed (TMA bytes), stage free (both consumers)."""
    ready_a = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    ready_b = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready_a.index(i), count=GATHER_WARPS * 32)
        mbarrier.init(ready_b.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    return ready_a, ready_b, empty


@gluon.jit
def _allocate_ring(b_desc, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                   NUM_STAGES: gl.constexpr):
    """The A and B stage rings (the weights' swizzle for both) and their barriers."""
    a_ring = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES, BLOCK_M, BLOCK_K], b_desc.layout)
    b_ring = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES, BLOCK_N, BLOCK_K], b_desc.layout)
    ready_a, ready_b, empty = _stage_barriers(NUM_STAGES)
    return a_ring, b_ring, ready_a, ready_b, empty


@gluon.jit
def _block_expert(expert_ids_ptr, pid_m, K, num_experts, BLOCK_K: gl.constexpr):
    """M block pid_m's expert, whether it is in [0, num_experts), and its K steps: a bad
    expert id reads nothing (no K steps) and stores zeros."""
    expert = gl.load(expert_ids_ptr + pid_m)
    ok = (expert >= 0) & (expert < num_experts)
    return expert, ok, gl.where(ok, gl.cdiv(K, BLOCK_K), 0)


@gluon.jit
def _load_b(b_desc, b_ring, ready_b, empty, row_b, k_tiles, it, BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    """One tile's weight K steps; `it` K steps went through the ring before (a persistent program's earlier tiles)."""
    for t in range(0, k_tiles):
        g = it + t
        stage = g % NUM_STAGES
        # The stage's previous K step (g - NUM_STAGES) must be released by both consumers.
        mbarrier.wait(empty.index(stage), ((g // NUM_STAGES) - 1) & 1, pred=g >= NUM_STAGES)
        bar = ready_b.index(stage)
        mbarrier.expect(bar, b_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(b_desc, [row_b, t * BLOCK_K], bar, b_ring.index(stage))


@gluon.jit
def _a_rows(a_ptr, a_ring, sorted_ids_ptr, pid_m, EM, num_valid_tokens, top_k, stride_am, BLOCK_M: gl.constexpr,
            BLOCK_K: gl.constexpr):
    """This partition's 16-byte pieces of the block's [BLOCK_M, BLOCK_K] A tile:
    (pointers at K offset 0, row mask, K offsets). Padding slots read row 0, masked."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    VEC: gl.constexpr = 128 // a_ring.dtype.primitive_bitwidth
    layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, VEC],
                                            threads_per_warp=[32 * VEC // BLOCK_K, BLOCK_K // VEC],
                                            warps_per_cta=[NUM_WARPS, 1], order=[1, 0])
    offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
    slot = gl.load(sorted_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    a_row = gl.where(slot_ok, slot // top_k, 0).to(gl.int64)
    offs_k = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, layout))
    ptrs = a_ptr + gl.expand_dims(a_row * stride_am, 1) + gl.expand_dims(offs_k, 0)
    return ptrs, gl.expand_dims(slot_ok, 1), offs_k


@gluon.jit
def _gather_a(a_ptr, a_ring, ready_a, empty, sorted_ids_ptr, pid_m, k_tiles, K, EM, num_valid_tokens, top_k,
              stride_am, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Each thread copies its 16-byte pieces of the stage's [BLOCK_M, BLOCK_K]
    A tile and arrives on ready_a once they landed (the barrier counts every
    thread of this partition). Rows of padding slots read nothing (zeros)."""
    ptrs, row_ok, offs_k = _a_rows(a_ptr, a_ring, sorted_ids_ptr, pid_m, EM, num_valid_tokens, top_k, stride_am,
                                   BLOCK_M, BLOCK_K)
    _gather_a_tile(a_ring, ready_a, empty, ptrs, row_ok, offs_k, k_tiles, 0, K, BLOCK_K, NUM_STAGES)


@gluon.jit
def _gather_a_tile(a_ring, ready_a, empty, ptrs, row_ok, offs_k, k_tiles, it, K, BLOCK_K: gl.constexpr,
                   NUM_STAGES: gl.constexpr):
    """One tile's A K steps from its row pointers (_a_rows), after `it` earlier K steps of the ring."""
    for t in range(0, k_tiles):
        g = it + t
        stage = g % NUM_STAGES
        mbarrier.wait(empty.index(stage), ((g // NUM_STAGES) - 1) & 1, pred=g >= NUM_STAGES)
        k0 = t * BLOCK_K
        mask = row_ok & gl.expand_dims(offs_k < K - k0, 0)
        async_copy.async_copy_global_to_shared(a_ring.index(stage), ptrs + k0, mask=mask)
        async_copy.mbarrier_arrive(ready_a.index(stage), increment_count=False)


@gluon.jit
def _store_c(acc, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM, num_valid_tokens, stride_cm,
             expert_ok, WHICH: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr):
    """This consumer's 64 rows of the tile, stored to their slots straight from
    the wgmma layout (routed weight applied; zeros for a bad expert, whatever
    the weights hold)."""
    acc_layout: gl.constexpr = acc.type.layout
    offs_m = pid_m * (2 * ROWS) + WHICH * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, acc_layout))
    slot = gl.load(sorted_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    if MUL_ROUTED_WEIGHT:
        w = gl.load(topk_weights_ptr + slot.to(gl.int64), mask=slot_ok, other=0.0)
        acc = acc * gl.expand_dims(w, 1)
    acc = gl.where(expert_ok, acc, 0.0)
    offs_n = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout))
    c_ptrs = c_ptr + gl.expand_dims(slot.to(gl.int64) * stride_cm, 1) + gl.expand_dims(offs_n, 0)
    mask = gl.expand_dims(slot_ok, 1) & gl.expand_dims(offs_n < N, 0)
    gl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@gluon.jit
def _consume(a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n,
             k_tiles, N, EM, num_valid_tokens, stride_cm, expert_ok, WHICH: gl.constexpr,
             MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    acc = _mma_tile(a_ring, b_ring, ready_a, ready_b, empty, k_tiles, 0, WHICH, BLOCK_N, NUM_STAGES)
    _store_c(acc, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM, num_valid_tokens, stride_cm,
             expert_ok, WHICH, MUL_ROUTED_WEIGHT, BLOCK_N)


@gluon.jit
def _mma_tile(a_ring, b_ring, ready_a, ready_b, empty, k_tiles, it, WHICH: gl.constexpr, BLOCK_N: gl.constexpr,
              NUM_STAGES: gl.constexpr):
    """This warpgroup's [64, BLOCK_N] fp32 product over one tile's K steps (after `it`
    earlier K steps of the ring), every wgmma retired; the last K step's stage is not
    released (a persistent program releases it, a one-tile program exits)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=acc_layout)
    for t in range(0, k_tiles):
        g = it + t
        stage = g % NUM_STAGES
        phase = (g // NUM_STAGES) & 1
        mbarrier.wait(ready_a.index(stage), phase)
        mbarrier.wait(ready_b.index(stage), phase)
        a = a_ring.index(stage).slice(WHICH * ROWS, ROWS)
        tok = warpgroup_mma(a, b_ring.index(stage).permute((1, 0)), acc, is_async=True)
        # wait(1): the previous K step's wgmma retired, so its stage can be refilled.
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(tok, ))
        mbarrier.arrive(empty.index((g + NUM_STAGES - 1) % NUM_STAGES), pred=t > 0)
    return warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k"])
def fused_moe_gemm_hopper(a_ptr, b_desc, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr,
                          num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, top_k, stride_am, stride_cm,
                          num_experts, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr,
                          BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                          NUM_STAGES: gl.constexpr):
    """One BLOCK_M x BLOCK_N tile of C. Grid: cdiv(EM, BLOCK_M) * cdiv(N, BLOCK_N)
    programs in grouped order (GROUP_M M blocks share each N column of B in L2).

    a_ptr   [rows, K] activations (row stride stride_am), gathered by slot // top_k
    b_desc  TMA descriptor over the weights [E, N, K] viewed as [E * N, K]
    c_ptr   [num_valid_tokens, N] out, row = slot, row stride stride_cm
    topk_weights_ptr fp32 [num_valid_tokens] (read if MUL_ROUTED_WEIGHT)
    sorted_token_ids_ptr int32 [EM], expert_ids_ptr int32 [cdiv(EM, BLOCK_M)],
    num_tokens_post_padded_ptr int32 [1] (M blocks at or past it exit at once)
    """
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    pid_m, pid_n = _grouped_tile(EM, N, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= gl.load(num_tokens_post_padded_ptr):
        return
    expert, expert_ok, k_tiles = _block_expert(expert_ids_ptr, pid_m, K, num_experts, BLOCK_K)
    row_b = gl.where(expert_ok, expert, 0) * N + pid_n * BLOCK_N
    a_ring, b_ring, ready_a, ready_b, empty = _allocate_ring(b_desc, BLOCK_M, BLOCK_N, BLOCK_K, NUM_STAGES)

    # The argument tuples stay inline: a tuple assigned to a variable first
    # turns its constexprs into runtime values. The two consumers differ in WHICH (0: top rows).
    gl.warp_specialize([
        (_consume, (a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, pid_m,
                    pid_n, k_tiles, N, EM, num_valid_tokens, stride_cm, expert_ok, 0, MUL_ROUTED_WEIGHT, BLOCK_N,
                    NUM_STAGES)),
        (_consume, (a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, pid_m,
                    pid_n, k_tiles, N, EM, num_valid_tokens, stride_cm, expert_ok, 1, MUL_ROUTED_WEIGHT, BLOCK_N,
                    NUM_STAGES)),
        (_load_b, (b_desc, b_ring, ready_b, empty, row_b, k_tiles, 0, BLOCK_K, NUM_STAGES)),
        (_gather_a, (a_ptr, a_ring, ready_a, empty, sorted_token_ids_ptr, pid_m, k_tiles, K, EM, num_valid_tokens,
                     top_k, stride_am, BLOCK_M, BLOCK_K, NUM_STAGES)),
    ], [4, 1, GATHER_WARPS], [224, 40, 80])
