"""The sm_90 bf16/fp16 MoE grouped GEMM in persistent form: fused_moe_gemm_hopper's
partitions (tritonsrc/moe/grouped_gemm_hopper.py: 1-warp TMA loader of the weights,
2-warp cp.async gatherer of the token rows, two consumer warpgroups of 64 rows),
with num_programs programs (one per SM) walking the tiles pid, pid + P, ... in the
same grouped order. Loader and gatherer run across tiles on one K-step counter
(ring stage and barrier phase come from it), so while the consumers store tile i
the ring already fills with tile i+1: no CTA launch and no pipeline fill per tile.

Why (issue 18.1, bf16 Mixtral-like M=4096 at 0.86-0.90x torch._grouped_mm): ncu
shows the one-tile-per-CTA kernels keep the tensor pipe 72-74% busy against
grouped_mm's 94% (132 persistent CTAs); the K loop itself is tight. Measured on the
H200 (bench/experiments/moe_gemm_persistent.py, bench/results/moe_gemm_persistent_sm90.json,
JIT): Mixtral-like M=4096 0.92-0.98x grouped_mm (the per-tile Gluon kernel 0.83-0.89x,
Triton 0.88-0.89x); DeepSeek-like random routing slower than the per-tile form
(fewer blocks per expert): v2src/ops/moe_gemm_hopper.cc runs it from
PERSISTENT_MIN_TOKENS_PER_EXPERT slots per expert (python/rules_moe_hopper.py).

Same contract as fused_moe_gemm_hopper (QUANT 0, ALIGNED, BLOCK_M 128; a block
whose expert id is outside [0, num_experts) writes zeros and reads no weights);
grid (num_programs, 1, 1): programs past the tile count exit at once.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

from .grouped_gemm_hopper import (GATHER_WARPS, ROWS, _a_rows, _allocate_ring, _block_expert, _gather_a_tile, _load_b,
                                  _mma_tile, _store_c)


@gluon.jit
def _tile_of(tile, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
    """(pid_m, pid_n) of tile index `tile` in grouped order (GROUP_M M blocks share each N column)."""
    in_group = GROUP_M * num_pid_n
    first_m = (tile // in_group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + (tile % in_group) % group_m, (tile % in_group) // group_m


@gluon.jit
def _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    num_pid_m = gl.cdiv(gl.load(num_tokens_post_padded_ptr), BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    return num_pid_m, num_pid_n, num_pid_m * num_pid_n


@gluon.jit
def _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts, BLOCK_K: gl.constexpr,
               GROUP_M: gl.constexpr):
    """(pid_m, pid_n, expert, expert ok, K steps) of one tile: a bad expert id gets no K step."""
    pid_m, pid_n = _tile_of(tile, num_pid_m, num_pid_n, GROUP_M)
    expert, ok, k_tiles = _block_expert(expert_ids_ptr, pid_m, K, num_experts, BLOCK_K)
    return pid_m, pid_n, expert, ok, k_tiles


@gluon.jit
def _load_b_tiles(b_desc, b_ring, ready_b, empty, expert_ids_ptr, num_tokens_post_padded_ptr, N, K, num_experts,
                  num_programs, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                  GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    num_pid_m, num_pid_n, tiles = _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), tiles, num_programs):
        pid_m, pid_n, expert, ok, k_tiles = _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts,
                                                       BLOCK_K, GROUP_M)
        row_b = gl.where(ok, expert, 0) * N + pid_n * BLOCK_N
        _load_b(b_desc, b_ring, ready_b, empty, row_b, k_tiles, it, BLOCK_K, NUM_STAGES)
        it += k_tiles


@gluon.jit
def _gather_a_tiles(a_ptr, a_ring, ready_a, empty, sorted_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, N, K,
                    EM, num_valid_tokens, top_k, stride_am, num_experts, num_programs, BLOCK_M: gl.constexpr,
                    BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                    NUM_STAGES: gl.constexpr):
    num_pid_m, num_pid_n, tiles = _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), tiles, num_programs):
        pid_m, pid_n, expert, ok, k_tiles = _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts,
                                                       BLOCK_K, GROUP_M)
        ptrs, row_ok, offs_k = _a_rows(a_ptr, a_ring, sorted_ids_ptr, pid_m, EM, num_valid_tokens, top_k, stride_am,
                                       BLOCK_M, BLOCK_K)
        _gather_a_tile(a_ring, ready_a, empty, ptrs, row_ok, offs_k, k_tiles, it, K, BLOCK_K, NUM_STAGES)
        it += k_tiles


@gluon.jit
def _consume_tiles(a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr,
                   num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, stride_cm, num_experts, num_programs,
                   WHICH: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_M: gl.constexpr,
                   BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, GROUP_M: gl.constexpr,
                   NUM_STAGES: gl.constexpr):
    num_pid_m, num_pid_n, tiles = _tile_count(num_tokens_post_padded_ptr, N, BLOCK_M, BLOCK_N)
    it = 0
    for tile in range(gl.program_id(0), tiles, num_programs):
        pid_m, pid_n, expert, ok, k_tiles = _tile_work(tile, num_pid_m, num_pid_n, expert_ids_ptr, K, num_experts,
                                                       BLOCK_K, GROUP_M)
        acc = _mma_tile(a_ring, b_ring, ready_a, ready_b, empty, k_tiles, it, WHICH, BLOCK_N, NUM_STAGES)
        it += k_tiles
        # The tile's last stage (the ring's next fill may be the next tile's first K steps).
        mbarrier.arrive(empty.index((it + NUM_STAGES - 1) % NUM_STAGES), pred=k_tiles > 0)
        _store_c(acc, c_ptr, topk_weights_ptr, sorted_ids_ptr, pid_m, pid_n, N, EM, num_valid_tokens, stride_cm, ok,
                 WHICH, MUL_ROUTED_WEIGHT, BLOCK_N)


@gluon.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k", "num_programs"])
def fused_moe_gemm_hopper_persistent(a_ptr, b_desc, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr,
                                     num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, top_k, stride_am,
                                     stride_cm, num_experts, num_programs, MUL_ROUTED_WEIGHT: gl.constexpr,
                                     BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                                     GROUP_M: gl.constexpr, NUM_STAGES: gl.constexpr):
    """fused_moe_gemm_hopper's tiles, walked by num_programs persistent programs (grid (num_programs,))."""
    gl.static_assert(BLOCK_M == 2 * ROWS, "BLOCK_M is two consumer warpgroups of 64 rows")
    a_ring, b_ring, ready_a, ready_b, empty = _allocate_ring(b_desc, BLOCK_M, BLOCK_N, BLOCK_K, NUM_STAGES)
    gl.warp_specialize([  # the consumers differ in WHICH (0: top rows)
        (_consume_tiles, (a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_token_ids_ptr,
                          expert_ids_ptr, num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, stride_cm,
                          num_experts, num_programs, 0, MUL_ROUTED_WEIGHT, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M,
                          NUM_STAGES)),
        (_consume_tiles, (a_ring, b_ring, ready_a, ready_b, empty, c_ptr, topk_weights_ptr, sorted_token_ids_ptr,
                          expert_ids_ptr, num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, stride_cm,
                          num_experts, num_programs, 1, MUL_ROUTED_WEIGHT, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M,
                          NUM_STAGES)),
        (_load_b_tiles, (b_desc, b_ring, ready_b, empty, expert_ids_ptr, num_tokens_post_padded_ptr, N, K, num_experts,
                         num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
        (_gather_a_tiles, (a_ptr, a_ring, ready_a, empty, sorted_token_ids_ptr, expert_ids_ptr,
                           num_tokens_post_padded_ptr, N, K, EM, num_valid_tokens, top_k, stride_am, num_experts,
                           num_programs, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES)),
    ], [4, 1, GATHER_WARPS], [224, 40, 80])
