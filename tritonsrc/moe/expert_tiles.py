"""Tile prologue of the grouped GEMMs over experts (fused_moe_kernel,
fused_moe_wq_kernel, moe_dgrad_kernel): which tile of C a program computes,
which slots (rows of C) its M block lists, and a split-K program's K tiles. The early exits (a block past
num_tokens_post_padded, an expert id out of range) stay in the kernels: a
return inside a helper would leave only the helper.
"""
import triton
import triton.language as tl


@triton.jit
def grouped_tile(EM, N, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """(pid_m, pid_n) of this program. Grouped ordering: GROUP_SIZE_M
    M-blocks share each N column of B in L2."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(EM, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def block_slots(pid_m, pid_n, sorted_token_ids_ptr, c_ptr, EM, N, num_valid_tokens, stride_cm,
                BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr):
    """The slots of M block pid_m (entries past EM read as the sentinel), which
    of them are rows of C (slot_ok: sentinels and negative ids are neither read
    nor written), the tile's N offsets, and C's tile pointers and store mask.
    Returns (slot, slot_ok, slot64, offs_n, c_ptrs, c_mask)."""
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    slot = tl.load(sorted_token_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    slot64 = slot.to(tl.int64)
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + slot64[:, None] * stride_cm + offs_n[None, :]
    c_mask = slot_ok[:, None] & (offs_n[None, :] < N)
    return slot, slot_ok, slot64, offs_n, c_ptrs, c_mask


@triton.jit
def split_k_tiles(K, c_ptr, stride_cm, BLOCK_SIZE_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """Split-K (SPLIT_K > 1, grid y): this program's K tiles [kb_lo, kb_hi) and C
    seen at its partial rows slot * SPLIT_K + pid_k. Returns (kb_lo, kb_hi,
    c_ptr, stride_cm) with c_ptr moved to the split's first row and the row
    stride scaled; a split past the last K tile gets an empty range (it writes zeros)."""
    pid_k = tl.program_id(1)
    num_kb = tl.cdiv(K, BLOCK_SIZE_K)
    kb_per_split = tl.cdiv(num_kb, SPLIT_K)
    kb_lo = pid_k * kb_per_split
    kb_hi = tl.minimum(kb_lo + kb_per_split, num_kb)
    return kb_lo, kb_hi, c_ptr + pid_k * stride_cm, stride_cm * SPLIT_K
