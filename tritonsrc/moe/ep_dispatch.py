"""Expert-parallel dispatch/combine indices: which token rows each local expert
reads, and where each (token, k) slot's result lands for the combine.

The grouping itself is moe_align_block_size with block_size = 1 (align.py):
it lists the slots s = m * topk + k of local experts grouped by local expert,
ascending s inside an expert, and gives each position its local expert.
This kernel turns that into the caller's three outputs:
  sorted_token_ids int32 [numel]: token m = s // topk at position p, -1 for
      p >= total (total = slots routed to local experts);
  inverse          int32 [numel] (= [M, topk]): position of slot s, or -1
      when s is not routed here (expert_map -1, or an id out of range);
  expert_offsets   int32 [num_local_experts + 1]: local expert e owns
      positions [expert_offsets[e], expert_offsets[e + 1]); the last is total.
Dispatch: x_local = x[sorted_token_ids[:total]]; combine:
  out[m] = sum_k w[m, k] * y[inverse[m, k]] over k with inverse[m, k] >= 0.
Every output element is written; no atomics (deterministic).

Constexprs
  functional: HAS_EXPERT_MAP (False/True: ids are local already / global ids
              mapped through expert_map, as in align.py).
  tuning:     BLOCK_T (slots and positions per program), num_warps.
Grid: (max(cdiv(numel, BLOCK_T), 1), 1, 1); program 0 also writes expert_offsets
(a binary search per expert over the grouped positions' experts).
"""
import triton
import triton.language as tl

from .align import _local_ids

OFFSET_TILE = tl.constexpr(128)  # experts per binary-search step


@triton.jit
def ep_dispatch_indices_kernel(topk_ids_ptr, expert_map_ptr, sorted_slots_ptr, position_experts_ptr, total_ptr,
                               sorted_token_ids_ptr, inverse_ptr, expert_offsets_ptr,
                               numel, topk, num_local_experts, expert_map_len,
                               HAS_EXPERT_MAP: tl.constexpr, BLOCK_T: tl.constexpr):
    """topk_ids_ptr int32 [numel]; expert_map_ptr int32 [expert_map_len];
    sorted_slots_ptr, position_experts_ptr int32 [numel] and total_ptr int32 [1]:
    moe_align's sorted_token_ids, expert_ids and num_tokens_post_padded at block_size 1.
    Outputs as in the module docstring."""
    pid = tl.program_id(0)
    total = tl.load(total_ptr)
    offs = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    in_range = offs < numel
    # Positions: token of each listed slot; the listed slots' inverse.
    listed = in_range & (offs < total)
    slot = tl.load(sorted_slots_ptr + offs, mask=listed, other=0)
    tl.store(sorted_token_ids_ptr + offs, tl.where(listed, slot // topk, -1), mask=in_range)
    tl.store(inverse_ptr + slot, offs, mask=listed)
    # Slots: -1 for the ones no position lists (disjoint from the stores above).
    local = _local_ids(topk_ids_ptr, expert_map_ptr, offs, numel, num_local_experts, expert_map_len,
                       HAS_EXPERT_MAP)
    tl.store(inverse_ptr + offs, tl.full([BLOCK_T], -1, tl.int32), mask=in_range & (local < 0))
    if pid == 0:
        # expert_offsets[e] = first position whose expert is >= e (positions are
        # grouped by ascending expert): a branch-free binary search over [0, total).
        for e0 in range(0, num_local_experts + 1, OFFSET_TILE):
            e = e0 + tl.arange(0, OFFSET_TILE)
            lo = tl.zeros([OFFSET_TILE], tl.int32)
            hi = tl.zeros([OFFSET_TILE], tl.int32) + total
            for _ in range(32):
                go = lo < hi
                mid = (lo + hi) // 2
                v = tl.load(position_experts_ptr + mid, mask=go, other=0)
                lo = tl.where(go & (v < e), mid + 1, lo)
                hi = tl.where(go & (v >= e), mid, hi)
            tl.store(expert_offsets_ptr + e, lo, mask=e <= num_local_experts)
