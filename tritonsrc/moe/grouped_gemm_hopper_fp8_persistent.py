"""The sm_90 fp8 w8a8 MoE grouped GEMM in persistent form: fused_moe_gemm_hopper_fp8's
partitions and per-tile bodies (tritonsrc/moe/grouped_gemm_hopper_fp8.py), walked by
num_programs programs (one per SM) over the tiles pid, pid + P, ... in the grouped
order, as grouped_gemm_hopper_persistent.py does for fp16/bf16: loader and gatherer
(with the block scales) run across tiles on one K-step counter, so the ring fills
with the next tile while the consumers promote, scale and store this one.

Why: with 128-wide fp8 K steps a tile of a short-K GEMM is few steps (DeepSeek-like
GEMM2, K = 2048: 16), so each tile's launch, ring fill and epilogue weigh more; there
the per-tile kernel reaches 1.42x bf16 with 128x128 block scales (bench/results/
moe_sm90.json, fifteenth session) where the issue asks 1.5x. Not yet measured on a GPU:
bench/experiments/moe_fp8_gluon.py --persistent times it against the per-tile kernel.
Same contract and scales as fused_moe_gemm_hopper_fp8; grid (num_programs, 1, 1).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .grouped_gemm_hopper import GATHER_WARPS, ROWS, _allocate_ring
from .grouped_gemm_hopper_fp8 import SCALE_GROUP, _consume_fp8, _gather_a_scaled
from .grouped_gemm_hopper_persistent import _load_b_tiles, _tile_count, _tile_work


@gluon.jit
def _gather_tiles(a_ptr, a_ring, as_ring, bs_ring, ready_a, empty, sorted_ids_ptr, a_scale_ptr, b_scale_ptr,
                  expert_ids_ptr, num_tokens_post_padded_ptr, K, N, EM, num_valid_tokens, top_k, stride_am, stride_asm,
                  stride_ask, stride_bse, stride_bsn, stride_bsk, num_experts, num_programs, QUANT: gl.constexpr,
                  BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                  NUM_STAGES: gl.constexpr):
    num_pid_m, num_pid_n, tiles = _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), tiles, num_programs):
        pid_m, pid_n, expert, ok, k_tiles = _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts,
                                                       BLOCK_K, GROUP_M)
        _gather_a_scaled(a_ptr, a_ring, as_ring, bs_ring, ready_a, empty, sorted_ids_ptr, a_scale_ptr, b_scale_ptr,
                         expert, pid_m, pid_n, k_tiles, it, K, N, EM, num_valid_tokens, top_k, stride_am, stride_asm,
                         stride_ask, stride_bse, stride_bsn, stride_bsk, ok, QUANT, BLOCK_M, BLOCK_N, BLOCK_K,
                         NUM_STAGES)
        it += k_tiles


@gluon.jit
def _consume_tiles(a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                   topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, K, N, EM,
                   num_valid_tokens, top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
                   num_experts, num_programs, WHICH: gl.constexpr, QUANT: gl.constexpr,
                   MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                   BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    # _consume_fp8 releases every K step's stage itself (it waits for each product before promoting it).
    num_pid_m, num_pid_n, tiles = _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), tiles, num_programs):
        pid_m, pid_n, expert, ok, k_tiles = _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts,
                                                       BLOCK_K, GROUP_M)
        _consume_fp8(a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                     topk_weights_ptr, sorted_ids_ptr, expert, pid_m, pid_n, k_tiles, it, N, EM, num_valid_tokens,
                     top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, ok, WHICH, QUANT,
                     MUL_ROUTED_WEIGHT, BLOCK_N, NUM_STAGES)
        it += k_tiles


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k", "num_programs"])
def fused_moe_gemm_hopper_fp8_persistent(a_ptr, b_desc, c_ptr, a_scale_ptr, b_scale_ptr, topk_weights_ptr,
                                         sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, N, K, EM,
                                         num_valid_tokens, top_k, stride_am, stride_cm, stride_asm, stride_ask,
                                         stride_bse, stride_bsn, stride_bsk, num_experts, num_programs,
                                         QUANT: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr,
                                         BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                                         NUM_STAGES: gl.constexpr):
    """fused_moe_gemm_hopper_fp8's tiles, walked by num_programs persistent programs (grid (num_programs,))."""
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    gl.static_assert((QUANT >= 1) & (QUANT <= 3), "fp8 scales: 1 per tensor, 2 blocks of 128, 3 per channel")
    gl.static_assert((BLOCK_N == SCALE_GROUP) | (BLOCK_N == 2 * SCALE_GROUP), "one or two 128-column halves")
    gl.static_assert((QUANT != 2) | (BLOCK_K == SCALE_GROUP), "a block-scaled K tile is one scale group")
    a_ring, b_ring, ready_a, ready_b, empty = _allocate_ring(b_desc, BLOCK_M, BLOCK_N, BLOCK_K, NUM_STAGES)
    plain: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    as_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], plain)
    bs_ring = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, 2], plain)
    gl.warp_specialize([  # the consumers differ in WHICH (0: top rows)
        (_consume_tiles, (a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                          topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, K, N,
                          EM, num_valid_tokens, top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn,
                          stride_bsk, num_experts, num_programs, 0, QUANT, MUL_ROUTED_WEIGHT, BLOCK_M, BLOCK_N,
                          BLOCK_K, GROUP_M, NUM_STAGES)),
        (_consume_tiles, (a_ring, b_ring, as_ring, bs_ring, ready_a, ready_b, empty, c_ptr, a_scale_ptr, b_scale_ptr,
                          topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, K, N,
                          EM, num_valid_tokens, top_k, stride_cm, stride_asm, stride_ask, stride_bse, stride_bsn,
                          stride_bsk, num_experts, num_programs, 1, QUANT, MUL_ROUTED_WEIGHT, BLOCK_M, BLOCK_N,
                          BLOCK_K, GROUP_M, NUM_STAGES)),
        (_load_b_tiles, (b_desc, b_ring, ready_b, empty, expert_ids_ptr, num_tokens_post_padded_ptr, N, K, num_experts,
                         num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
        (_gather_tiles, (a_ptr, a_ring, as_ring, bs_ring, ready_a, empty, sorted_token_ids_ptr, a_scale_ptr,
                         b_scale_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, K, N, EM, num_valid_tokens, top_k,
                         stride_am, stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, num_experts,
                         num_programs, QUANT, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
    ], [4, 1, GATHER_WARPS], [216, 40, 80])
