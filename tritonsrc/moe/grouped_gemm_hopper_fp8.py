"""The MoE grouped GEMM for Hopper (sm_90) on fp8 w8a8 operands, in Gluon: the
warp-specialized schedule of grouped_gemm_hopper.py (two consumer warpgroups of
64 rows sharing each B stage, a 1-warp TMA loader for the weights, a 2-warp
cp.async gatherer for the token rows) with the fp8 scales of fused_moe_kernel
(grouped_gemm.py): QUANT 1 per tensor (a [1], b [E]), 2 blocks of 128 x 128
(a [rows, cdiv(K, 128)], b [E, cdiv(N, 128), cdiv(K, 128)]), 3 per token and
per output channel (a [rows], b [E, N]). Output bf16 or fp16, fp32 accumulation.

Why a kernel of its own: sm_90's fp8 wgmma sums in limited precision, so each
128-wide K tile's product is added into the fp32 accumulator by the CUDA cores
(fused_moe_kernel does it with max_num_imprecise_acc, the block path multiplies
the scales in). Triton waits for the tile's wgmma before that add with one
warpgroup program, leaving the tensor cores idle meanwhile (SASS:
docs/notes-moe-perf.md). Here each consumer warpgroup waits for its own tile
product and adds it while the other warpgroup's wgmma runs, as DeepGEMM-style
fp8 kernels overlap their promotion; the loaders keep NUM_STAGES tiles ahead.
With 128x128 blocks the gatherer also copies each stage's scales (the tile
rows' A scales, the B scale of each 128-column half) into shared memory under
the stage's ready barrier, so the consumers wait on no global load.

Tiles of 128 x 128 x 128 fp8 need ~128 FLOP per byte moved from L2 to shared
memory: at ~10 TB/s of L2 bandwidth that caps them near 1 PFLOP/s, below the
fp8 tensor cores. BLOCK_N 256 halves the A traffic per FLOP; a consumer then
keeps two 64 x 128 accumulators and one 64 x 128 product in registers (a
whole 64 x 256 product would need 256 per thread beside the accumulator's 128).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

from .grouped_gemm_hopper import (GATHER_WARPS, ROWS, _a_rows, _allocate_ring, _block_expert, _grouped_tile, _load_b,
                                  _store_c)

SCALE_GROUP = gl.constexpr(128)  # block-quant group along K (A and B) and N (B)


@gluon.jit
def _promote(acc, part, a_s, b_s, QUANT: gl.constexpr):
    """acc + one K tile's product: scaled by the tile's row and column-group scales (QUANT 2)."""
    if QUANT == 2:
        return acc + part * gl.expand_dims(a_s * b_s, 1)
    return acc + part


@gluon.jit
def _output_scales(acc, a_scale_ptr, b_scale_ptr, e64, a_row, slot_ok, half_n, N, stride_asm, stride_bse, stride_bsn,
                   expert_ok, QUANT: gl.constexpr):
    """Columns [half_n * 128, + 128) of this warpgroup's rows times the per-tensor or per-channel scales."""
    if QUANT == 1:
        acc = acc * (gl.load(a_scale_ptr) * gl.load(b_scale_ptr + e64 * stride_bse))
    if QUANT == 3:
        cols_l: gl.constexpr = gl.SliceLayout(0, acc.type.layout)
        offs_n = half_n * SCALE_GROUP + gl.arange(0, SCALE_GROUP, layout=cols_l)
        a_s = gl.load(a_scale_ptr + a_row * stride_asm, mask=slot_ok, other=0.0)
        b_s = gl.load(b_scale_ptr + e64 * stride_bse + offs_n * stride_bsn, mask=(offs_n < N) & expert_ok, other=0.0)
        acc = acc * (gl.expand_dims(a_s, 1) * gl.expand_dims(b_s, 0))
    return acc


@gluon.jit
def _consume_fp8(a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                 topk_weights_ptr, sorted_ids_ptr, expert, pid_m, pid_n, k_tiles, it, N, EM, num_valid_tokens, top_k,
                 stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, expert_ok, WHICH: gl.constexpr,
                 QUANT: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_N: gl.constexpr,
                 NUM_STAGES: gl.constexpr):
    """This warpgroup's 64 rows of the tile, in one or two 128-column halves:
    each half's product (64 registers) is waited for and promoted before the
    next is issued, so a 256-wide tile holds 2 x 64 accumulator registers and
    one 64-register product (a whole-tile product would need 256). `it`: K steps
    that went through the ring before this tile (a persistent program's)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    HALF: gl.constexpr = SCALE_GROUP
    TWO: gl.constexpr = BLOCK_N == 2 * HALF
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                         instr_shape=[16, HALF, 32])
    rows_l: gl.constexpr = gl.SliceLayout(1, acc_layout)
    acc0 = gl.zeros([ROWS, HALF], gl.float32, layout=acc_layout)
    acc1 = gl.zeros([ROWS, HALF], gl.float32, layout=acc_layout)
    part = gl.zeros([ROWS, HALF], gl.float32, layout=acc_layout)
    # This warpgroup's rows: their A row (token) for the A scales.
    offs_m = pid_m * (2 * ROWS) + WHICH * ROWS + gl.arange(0, ROWS, layout=rows_l)
    slot = gl.load(sorted_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    a_row = gl.where(slot_ok, slot // top_k, 0).to(gl.int64)
    e64 = gl.where(expert_ok, expert, 0).to(gl.int64)  # a bad expert reads no scale (k_tiles is 0)
    n0 = pid_n * (BLOCK_N // HALF)  # the first half's 128-column group
    if QUANT == 2:
        pair_l: gl.constexpr = gl.BlockedLayout([2], [32], [NUM_WARPS], [0])
        half_id = gl.arange(0, 2, layout=pair_l)
    for t in range(0, k_tiles):
        g = it + t
        stage = g % NUM_STAGES
        phase = (g // NUM_STAGES) & 1
        mbarrier.wait(ready_a.index(stage), phase)
        mbarrier.wait(ready_b.index(stage), phase)
        a = a_ring.index(stage).slice(WHICH * ROWS, ROWS)
        b = b_ring.index(stage)
        tok = warpgroup_mma(a, b.slice(0, HALF).permute((1, 0)), part, use_acc=False, is_async=True)
        a_s = 0.0
        b_s0 = 0.0
        b_s1 = 0.0
        if QUANT == 2:
            # The gatherer staged this K tile's scales beside its A rows (under ready_a): its
            # rows' A scales and the two halves' B scales (0 past N), read from shared memory.
            a_s = as_ring.index(stage).slice(WHICH * ROWS, ROWS).load(rows_l)
            pair = bs_ring.index(stage).load(pair_l)
            b_s0 = gl.sum(gl.where(half_id == 0, pair, 0.0), axis=0)
            b_s1 = gl.sum(gl.where(half_id == 1, pair, 0.0), axis=0)
        part = warpgroup_mma_wait(num_outstanding=0, deps=(tok, ))
        # Promote while the other warpgroup's wgmma runs.
        acc0 = _promote(acc0, part, a_s, b_s0, QUANT)
        if TWO:
            tok = warpgroup_mma(a, b.slice(HALF, HALF).permute((1, 0)), part, use_acc=False, is_async=True)
            part = warpgroup_mma_wait(num_outstanding=0, deps=(tok, ))
            acc1 = _promote(acc1, part, a_s, b_s1, QUANT)
        mbarrier.arrive(empty.index(stage))
    if QUANT == 3:
        # Per channel: scale and store one half at a time, so that the half's 32 column scales
        # live beside one accumulator, not two (both first spilled at 256-wide tiles).
        acc0 = _output_scales(acc0, a_scale_ptr, b_scale_ptr, e64, a_row, slot_ok, n0, N, stride_asm, stride_bse,
                              stride_bsn, expert_ok, QUANT)
        _store_c(acc0, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, n0, N, EM, num_valid_tokens, stride_cm,
                 expert_ok, WHICH, MUL_ROUTED_WEIGHT, HALF)
        if TWO:
            acc1 = _output_scales(acc1, a_scale_ptr, b_scale_ptr, e64, a_row, slot_ok, n0 + 1, N, stride_asm,
                                  stride_bse, stride_bsn, expert_ok, QUANT)
            _store_c(acc1, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, n0 + 1, N, EM, num_valid_tokens, stride_cm,
                     expert_ok, WHICH, MUL_ROUTED_WEIGHT, HALF)
    else:
        # Output scales (a scalar or none) on both halves first, then the stores.
        acc0 = _output_scales(acc0, a_scale_ptr, b_scale_ptr, e64, a_row, slot_ok, n0, N, stride_asm, stride_bse,
                              stride_bsn, expert_ok, QUANT)
        if TWO:
            acc1 = _output_scales(acc1, a_scale_ptr, b_scale_ptr, e64, a_row, slot_ok, n0 + 1, N, stride_asm,
                                  stride_bse, stride_bsn, expert_ok, QUANT)
        _store_c(acc0, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, n0, N, EM, num_valid_tokens, stride_cm,
                 expert_ok, WHICH, MUL_ROUTED_WEIGHT, HALF)
        if TWO:
            _store_c(acc1, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, n0 + 1, N, EM, num_valid_tokens, stride_cm,
                     expert_ok, WHICH, MUL_ROUTED_WEIGHT, HALF)


@gluon.jit
def _gather_a_scaled(a_ptr, a_ring, as_ring, bs_ring, ready_a, empty, sorted_ids_ptr, a_scale_ptr, b_scale_ptr,
                     expert, pid_m, pid_n, k_tiles, it, K, N, EM, num_valid_tokens, top_k, stride_am, stride_asm,
                     stride_ask, stride_bse, stride_bsn, stride_bsk, expert_ok, QUANT: gl.constexpr,
                     BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, NUM_STAGES: gl.constexpr):
    """The A tile of each stage by 16-byte cp.async (grouped_gemm_hopper._gather_a), and with
    QUANT 2 the stage's scales by 4-byte cp.async into as_ring / bs_ring (masked entries
    zero-filled), all completing under ready_a: the consumers then wait on no global load
    and hold no scale a tile ahead."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    ptrs, row_ok, offs_k = _a_rows(a_ptr, a_ring, sorted_ids_ptr, pid_m, EM, num_valid_tokens, top_k, stride_am,
                                   BLOCK_M, BLOCK_K)
    if QUANT == 2:
        vec_l: gl.constexpr = gl.BlockedLayout([1], [32], [NUM_WARPS], [0])
        offs_s = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=vec_l)
        slot_s = gl.load(sorted_ids_ptr + offs_s, mask=offs_s < EM, other=num_valid_tokens)
        ok_s = (slot_s >= 0) & (slot_s < num_valid_tokens)
        as_ptrs = a_scale_ptr + gl.where(ok_s, slot_s // top_k, 0).to(gl.int64) * stride_asm
        # The tile's one or two 128-column scale groups; a second one past N (or past a
        # 128-wide tile) stays 0.
        first = pid_n * (BLOCK_N // SCALE_GROUP)
        group = first + gl.arange(0, 2, layout=vec_l)
        group_ok = (group * SCALE_GROUP < N) & (group < first + BLOCK_N // SCALE_GROUP)
        bs_ptrs = b_scale_ptr + gl.where(expert_ok, expert, 0).to(gl.int64) * stride_bse + group * stride_bsn
    for t in range(0, k_tiles):
        g = it + t
        stage = g % NUM_STAGES
        mbarrier.wait(empty.index(stage), ((g // NUM_STAGES) - 1) & 1, pred=g >= NUM_STAGES)
        k0 = t * BLOCK_K
        mask = row_ok & gl.expand_dims(offs_k < K - k0, 0)
        async_copy.async_copy_global_to_shared(a_ring.index(stage), ptrs + k0, mask=mask)
        if QUANT == 2:
            async_copy.async_copy_global_to_shared(as_ring.index(stage), as_ptrs + t * stride_ask, mask=ok_s)
            async_copy.async_copy_global_to_shared(bs_ring.index(stage), bs_ptrs + t * stride_bsk, mask=group_ok)
        async_copy.mbarrier_arrive(ready_a.index(stage), increment_count=False)


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k"])
def fused_moe_gemm_hopper_fp8(a_ptr, b_desc, c_ptr, a_scale_ptr, b_scale_ptr, topk_weights_ptr,
                              sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, N, K, EM,
                              num_valid_tokens, top_k, stride_am, stride_cm, stride_asm, stride_ask, stride_bse,
                              stride_bsn, stride_bsk, num_experts, QUANT: gl.constexpr,
                              MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                              BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    """One BLOCK_M x BLOCK_N tile of C; grid and tile order as fused_moe_gemm_hopper.

    a_ptr   fp8 [rows, K] (row stride stride_am), gathered by slot // top_k
    b_desc  TMA descriptor over the fp8 weights [E, N, K] viewed as [E * N, K]
    c_ptr   bf16/fp16 [num_valid_tokens, N], row = slot
    a_scale_ptr, b_scale_ptr  fp32, by QUANT (module doc), strides (stride_asm, stride_ask),
            (stride_bse, stride_bsn, stride_bsk); unused strides may be 0
    the rest as fused_moe_gemm_hopper.
    """
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    gl.static_assert((QUANT >= 1) & (QUANT <= 3), "fp8 scales: 1 per tensor, 2 blocks of 128, 3 per channel")
    gl.static_assert((BLOCK_N == SCALE_GROUP) | (BLOCK_N == 2 * SCALE_GROUP), "one or two 128-column halves")
    gl.static_assert((QUANT != 2) | (BLOCK_K == SCALE_GROUP), "a block-scaled K tile is one scale group")
    pid_m, pid_n = _grouped_tile(EM, N, BLOCK_M, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= gl.load(num_tokens_post_padded_ptr):
        return
    expert, expert_ok, k_tiles = _block_expert(expert_ids_ptr, pid_m, K, num_experts, BLOCK_K)
    row_b = gl.where(expert_ok, expert, 0) * N + pid_n * BLOCK_N
    a_ring, b_ring, ready_a, ready_b, empty = _allocate_ring(b_desc, BLOCK_M, BLOCK_N, BLOCK_K, NUM_STAGES)
    # QUANT 2: each stage's A scales (one per row) and B scales (one per 128-column half).
    plain: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])  # per stage
    as_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], plain)
    bs_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, 2], plain)

    gl.warp_specialize([  # the consumers differ in WHICH (0: top rows); 0 K steps before the tile
        (_consume_fp8, (a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                        topk_weights_ptr, sorted_token_ids_ptr, expert, pid_m, pid_n, k_tiles, 0, N, EM,
                        num_valid_tokens, top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn,
                        stride_bsk, expert_ok, 0, QUANT, MUL_ROUTED_WEIGHT, BLOCK_N, NUM_STAGES)),
        (_consume_fp8, (a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                        topk_weights_ptr, sorted_token_ids_ptr, expert, pid_m, pid_n, k_tiles, 0, N, EM,
                        num_valid_tokens, top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn,
                        stride_bsk, expert_ok, 1, QUANT, MUL_ROUTED_WEIGHT, BLOCK_N, NUM_STAGES)),
        (_load_b, (b_desc, b_ring, ready_b, empty, row_b, k_tiles, 0, BLOCK_K, NUM_STAGES)),
        (_gather_a_scaled, (a_ptr, a_ring, as_ring, bs_ring, ready_a, empty, sorted_token_ids_ptr, a_scale_ptr,
                            b_scale_ptr, expert, pid_m, pid_n, k_tiles, 0, K, N, EM, num_valid_tokens, top_k, stride_am,
                            stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, expert_ok, QUANT, BLOCK_M,
                            BLOCK_N, BLOCK_K, NUM_STAGES)),
    ], [4, 1, GATHER_WARPS], [216, 40, 80])
