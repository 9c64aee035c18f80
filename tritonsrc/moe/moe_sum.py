"""Sum of the per-expert outputs of each token: out[m, :] = sum_k in[m, k, :].

Functional: dtype. Tuning: BLOCK (columns per program), BLOCK_R (rows per load), num_warps.
Grid: (n_tokens, cdiv(hidden, BLOCK), 1).
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor
from .align import slot_kept


@triton.jit
def moe_sum_kernel(out_ptr, in_ptr, topk_ids_ptr, expert_map_ptr, n_tokens, topk, hidden, rows_per_slot,
                   num_experts, expert_map_len, stride_out_m, stride_in_m, stride_in_k, BLOCK: tl.constexpr,
                   BLOCK_R: tl.constexpr, USE_PDL: tl.constexpr = False):
    """out: [n_tokens, hidden] (row stride stride_out_m); in: [n_tokens, topk,
    hidden] with strides (stride_in_m, stride_in_k, 1). Accumulates in fp32.
    n_tokens is only used by the launch grid.

    rows_per_slot > 0 (fused_experts): in's rows are slots' rows, rows_per_slot
    consecutive ones per slot (split-K partials), and the rows of slots moe_align
    drops (topk_ids_ptr int32 [n_tokens * topk / rows_per_slot], through
    expert_map_ptr int32 [expert_map_len] when expert_map_len > 0, local experts
    [0, num_experts)) are skipped: GEMM2 never writes them, and skipping here saves
    the launch that zeroed them. rows_per_slot 0: every row is summed, the id
    pointers are not read."""
    wait_for_predecessor(USE_PDL)
    m = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    src = in_ptr + m * stride_in_m + cols
    # BLOCK_R rows per load (one round trip per BLOCK_R rows; decode sums ~8: top-k x split-K
    # partials). bench/experiments/moe_sum_rows.py on the H200 (us, with the slot check:
    # Mixtral M=1 split 4 / Mixtral M=4096): a row per loop trip 1.63 (no check) / 25.5,
    # BLOCK_R 4 2.1 / 26.4-29.1, BLOCK_R 8 1.8 / 34-36 (masked rows of top-2 cost registers).
    # A runtime branch inside a row loop cost more (2.5 / 25.9 without the check, 3.6 with).
    # Loading the row unmasked and discarding a dropped slot's with where (no wait for the
    # id) measured the same as masking the load by it (1.76 us at BLOCK_R 8).
    for r0 in range(0, topk, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        keep = r < topk
        if rows_per_slot > 0:
            slot = m * (topk // rows_per_slot) + r // rows_per_slot
            keep = slot_kept(topk_ids_ptr, expert_map_ptr, slot, num_experts, expert_map_len, keep)
        x = tl.load(src[None, :] + r[:, None].to(tl.int64) * stride_in_k, mask=keep[:, None] & mask[None, :],
                    other=0.0)
        acc += tl.sum(x.to(tl.float32), axis=0)
    tl.store(out_ptr + m * stride_out_m + cols, acc.to(out_ptr.dtype.element_ty), mask=mask)
