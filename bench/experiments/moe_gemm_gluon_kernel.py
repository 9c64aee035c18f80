"""Experiment: the MoE grouped GEMM as a warp-specialized Gluon kernel for
sm_90 (CUTLASS's "cooperative" schedule), on A pre-sorted into moe_align
order (a_sorted [EM, K], padding rows zero; see moe_gemm_tma_kernels.py),
or with A's rows gathered by a loader warpgroup with cp.async, as production
does, while one warp brings B by TMA (that variant is now the product kernel,
tritonsrc/moe/grouped_gemm_hopper.py).

One 128 x BLOCK_N tile per CTA, launched with num_warps=4; partitions
(gl.warp_specialize):
- two consumer warpgroups, 64 rows each, sharing the B tile: wgmma only,
  one in flight, releasing a ring stage once the wgmma that read it retired;
- one loader warp keeping the ring full by TMA (host descriptors: A over
  a_sorted [EM, K], B over the weights viewed as [E * N, K]; a tile past an
  expert's N rows reads the next expert's rows, which land in columns the
  store masks; K tails and the last expert's tail are zero-filled by TMA).
No CTA-wide barrier in the main loop, the loads run ahead of the tensor
cores by NUM_STAGES tiles. Same contract as the production kernel (QUANT 0):
C[slot] = A[slot] @ B[expert]^T (* routed weight), expert ids outside
[0, E) write zeros.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from tritonsrc.moe.grouped_gemm_hopper_persistent import _tile_of  # the product's grouped tile order

ROWS = gl.constexpr(64)  # rows per consumer warpgroup


@gluon.jit
def _loader(a_desc, b_desc, a_ring, b_ring, ready, empty, row_a, row_b, k_tiles,
            BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    for t in range(0, k_tiles):
        stage = t % NUM_STAGES
        # The stage's previous tile (t - NUM_STAGES) must be released by both consumers.
        mbarrier.wait(empty.index(stage), ((t // NUM_STAGES) - 1) & 1, pred=t >= NUM_STAGES)
        bar = ready.index(stage)
        mbarrier.expect(bar, a_desc.block_type.nbytes + b_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(a_desc, [row_a, t * BLOCK_K], bar, a_ring.index(stage))
        tma.async_copy_global_to_shared(b_desc, [row_b, t * BLOCK_K], bar, b_ring.index(stage))


@gluon.jit
def _epilogue(acc, acc_layout: gl.constexpr, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM,
              num_valid_tokens, stride_cm, expert_ok, WHICH: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr,
              BLOCK_N: gl.constexpr):
    """This consumer's 64 rows of the tile, stored to their slots (routed weight, zeros for a bad expert)."""
    rows_layout: gl.constexpr = gl.SliceLayout(1, acc_layout)
    cols_layout: gl.constexpr = gl.SliceLayout(0, acc_layout)
    offs_m = pid_m * (2 * ROWS) + WHICH * ROWS + gl.arange(0, ROWS, layout=rows_layout)
    slot = gl.load(sorted_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    if MUL_ROUTED_WEIGHT:
        w = gl.load(topk_weights_ptr + slot, mask=slot_ok, other=0.0)
        acc = acc * gl.expand_dims(w, 1)
    acc = gl.where(expert_ok, acc, 0.0)
    offs_n = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=cols_layout)
    c_ptrs = c_ptr + gl.expand_dims(slot.to(gl.int64) * stride_cm, 1) + gl.expand_dims(offs_n, 0)
    mask = gl.expand_dims(slot_ok, 1) & gl.expand_dims(offs_n < N, 0)
    gl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@gluon.jit
def _consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, k_tiles,
              N, EM, num_valid_tokens, stride_cm, expert_ok,
              WHICH: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr,
              NUM_STAGES: gl.constexpr):
    NUM_WARPS: gl.constexpr = gl.num_warps()
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=acc_layout)
    for t in range(0, k_tiles):
        stage = t % NUM_STAGES
        mbarrier.wait(ready.index(stage), (t // NUM_STAGES) & 1)
        a = a_ring.index(stage).slice(WHICH * ROWS, ROWS)
        tok = warpgroup_mma(a, b_ring.index(stage).permute((1, 0)), acc, is_async=True)
        # wait(1): the previous tile's wgmma retired, so its stage can be refilled.
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(tok, ))
        mbarrier.arrive(empty.index((t + NUM_STAGES - 1) % NUM_STAGES), pred=t > 0)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    _epilogue(acc, acc_layout, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM, num_valid_tokens,
              stride_cm, expert_ok, WHICH, MUL_ROUTED_WEIGHT, BLOCK_N)


@gluon.jit
def _first_consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, k_tiles,
                    N, EM, num_valid_tokens, stride_cm, expert_ok,
                    MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    _consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, k_tiles,
              N, EM, num_valid_tokens, stride_cm, expert_ok, 0, MUL_ROUTED_WEIGHT, BLOCK_N, NUM_STAGES)


@gluon.jit
def _second_consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, k_tiles,
                     N, EM, num_valid_tokens, stride_cm, expert_ok,
                     MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    _consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, k_tiles,
              N, EM, num_valid_tokens, stride_cm, expert_ok, 1, MUL_ROUTED_WEIGHT, BLOCK_N, NUM_STAGES)


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens"])
def moe_gemm_gluon_ws_kernel(a_desc, b_desc, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, ntpp_ptr,
                             N, K, EM, num_valid_tokens, stride_cm, num_experts,
                             MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                             BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    num_pid_m = gl.cdiv(EM, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_pid_n
    pid = gl.program_id(0)
    first_m = (pid // in_group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    if pid_m * BLOCK_M >= gl.load(ntpp_ptr):
        return
    expert = gl.load(expert_ids_ptr + pid_m)
    expert_ok = (expert >= 0) & (expert < num_experts)
    expert = gl.where(expert_ok, expert, 0)
    k_tiles = gl.cdiv(K, BLOCK_K)

    a_ring = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
    b_ring = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES, BLOCK_N, BLOCK_K], b_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    row_a = pid_m * BLOCK_M
    row_b = expert * N + pid_n * BLOCK_N

    gl.warp_specialize([
        (_first_consumer, (a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n,
                           k_tiles, N, EM, num_valid_tokens, stride_cm, expert_ok, MUL_ROUTED_WEIGHT, BLOCK_N,
                           NUM_STAGES)),
        (_second_consumer, (a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n,
                            k_tiles, N, EM, num_valid_tokens, stride_cm, expert_ok, MUL_ROUTED_WEIGHT, BLOCK_N,
                            NUM_STAGES)),
        (_loader, (a_desc, b_desc, a_ring, b_ring, ready, empty, row_a, row_b, k_tiles, BLOCK_K, NUM_STAGES)),
    ], [4, 1], [232, 40])


# ---------------------------------------------------------------- A gathered by cp.async
# The gathered-A variant (gluon_ws_gather) shipped as the product kernel
# tritonsrc/moe/grouped_gemm_hopper.py (fused_moe_gemm_hopper, same arguments);
# moe_gemm_tma.py launches that one for this experiment's "gluon_ws_gather".


@gluon.jit
def _persistent_loader(a_desc, b_desc, a_ring, b_ring, ready, empty, expert_ids_ptr, N, num_experts, num_pid_m,
                       num_pid_n, k_tiles, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                       GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    """The ring runs on across tiles (step counter i): the next tile's first
    stages load while the consumers store this one."""
    i = 0
    for tile in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_of(tile, num_pid_m, num_pid_n, GROUP_M)
        expert = gl.load(expert_ids_ptr + pid_m)
        expert = gl.where((expert >= 0) & (expert < num_experts), expert, 0)
        for t in range(0, k_tiles):
            stage = i % NUM_STAGES
            mbarrier.wait(empty.index(stage), ((i // NUM_STAGES) - 1) & 1, pred=i >= NUM_STAGES)
            bar = ready.index(stage)
            mbarrier.expect(bar, a_desc.block_type.nbytes + b_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(a_desc, [pid_m * BLOCK_M, t * BLOCK_K], bar, a_ring.index(stage))
            tma.async_copy_global_to_shared(b_desc, [expert * N + pid_n * BLOCK_N, t * BLOCK_K], bar,
                                            b_ring.index(stage))
            i += 1


@gluon.jit
def _persistent_consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, N,
                         EM, num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles,
                         WHICH: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr,
                         GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    NUM_WARPS: gl.constexpr = gl.num_warps()
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    i = 0
    for tile in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_of(tile, num_pid_m, num_pid_n, GROUP_M)
        expert = gl.load(expert_ids_ptr + pid_m)
        expert_ok = (expert >= 0) & (expert < num_experts)
        acc = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=acc_layout)
        for t in range(0, k_tiles):
            stage = i % NUM_STAGES
            mbarrier.wait(ready.index(stage), (i // NUM_STAGES) & 1)
            a = a_ring.index(stage).slice(WHICH * ROWS, ROWS)
            tok = warpgroup_mma(a, b_ring.index(stage).permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(tok, ))
            # The previous step's stage (this tile's or the last tile's final one) is free.
            mbarrier.arrive(empty.index((i + NUM_STAGES - 1) % NUM_STAGES), pred=i > 0)
            i += 1
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        _epilogue(acc, acc_layout, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM, num_valid_tokens,
                  stride_cm, expert_ok, WHICH, MUL_ROUTED_WEIGHT, BLOCK_N)


@gluon.jit
def _persistent_first(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, N, EM,
                      num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles,
                      MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr,
                      NUM_STAGES: gl.constexpr):
    _persistent_consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, N,
                         EM, num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles, 0,
                         MUL_ROUTED_WEIGHT, BLOCK_N, GROUP_M, NUM_STAGES)


@gluon.jit
def _persistent_second(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, N, EM,
                       num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles,
                       MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr, GROUP_M: gl.constexpr,
                       NUM_STAGES: gl.constexpr):
    _persistent_consumer(a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, N,
                         EM, num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles, 1,
                         MUL_ROUTED_WEIGHT, BLOCK_N, GROUP_M, NUM_STAGES)


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens"])
def moe_gemm_gluon_ws_persistent_kernel(a_desc, b_desc, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr,
                                        ntpp_ptr, N, K, EM, num_valid_tokens, stride_cm, num_experts,
                                        MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr,
                                        BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                                        NUM_STAGES: gl.constexpr):
    """moe_gemm_gluon_ws_kernel with one CTA per SM walking the valid tiles
    (M blocks below num_tokens_post_padded only) in the grouped order."""
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    num_pid_m = gl.load(ntpp_ptr) // BLOCK_M
    num_pid_n = gl.cdiv(N, BLOCK_N)
    k_tiles = gl.cdiv(K, BLOCK_K)
    a_ring = gl.allocate_shared_memory(a_desc.dtype, [NUM_STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
    b_ring = gl.allocate_shared_memory(b_desc.dtype, [NUM_STAGES, BLOCK_N, BLOCK_K], b_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    gl.warp_specialize([
        (_persistent_first, (a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr,
                             N, EM, num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles,
                             MUL_ROUTED_WEIGHT, BLOCK_N, GROUP_M, NUM_STAGES)),
        (_persistent_second, (a_ring, b_ring, ready, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr,
                              N, EM, num_valid_tokens, stride_cm, num_experts, num_pid_m, num_pid_n, k_tiles,
                              MUL_ROUTED_WEIGHT, BLOCK_N, GROUP_M, NUM_STAGES)),
        (_persistent_loader, (a_desc, b_desc, a_ring, b_ring, ready, empty, expert_ids_ptr, N, num_experts,
                              num_pid_m, num_pid_n, k_tiles, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
    ], [4, 1], [232, 40])
