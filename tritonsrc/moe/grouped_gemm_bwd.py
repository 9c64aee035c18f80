"""Backward of fused_experts: the grouped GEMMs' input and weight gradients.

Both kernels walk the slots moe_align_block_size sorted by expert (its
block_size = BLOCK_SIZE_M), like the forward grouped GEMM (grouped_gemm.py).

moe_dgrad_kernel  C[slot, n] = sum_k A[slot // top_k, k] * B[e, k, n]
    The input gradient: the forward computes Y = X W[e]^T with W [E, N_out, K_in]
    and K_in contiguous; dX = dY W[e] reads W with the *output* dim as the
    reduction, so the contiguous dim is now the output column n. The forward
    kernel hard-wires a unit stride along its reduction dim (vectorized loads,
    wgmma operands), so it cannot run this with swapped strides.
moe_wgrad_kernel  dW[e, n, k] = sum over the slots s of expert e of
                  dY[s // top_k_dy, n] (* topk_weights[s]) * X[s // top_k_x, k]
    One program owns one (expert, n tile, k tile) of dW and sums that expert's
    token blocks in order: no atomics, the result is bit-reproducible.

Constexprs
  functional: ALIGNED (all of K, N and the row strides multiples of 16, as in
              the forward), MUL_ROUTED_WEIGHT (wgrad: scale dY rows by the slot's
              routing weight), BLOCK_SIZE_M (= the align block size);
              dtypes through the pointer types (fp16 or bf16, one for all).
  tuning:     BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M (dgrad), num_warps, num_stages.
Grids: dgrad (cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N), 1, 1);
       wgrad (num_experts * cdiv(N, BLOCK_SIZE_N) * cdiv(K, BLOCK_SIZE_K), 1, 1).
"""
import triton
import triton.language as tl

from .expert_tiles import block_slots, grouped_tile


@triton.jit
def moe_dgrad_kernel(a_ptr, b_ptr, c_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                     N, K, EM, num_valid_tokens, top_k, stride_am, stride_be, stride_bk, stride_cm, num_experts,
                     ALIGNED: tl.constexpr, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                     BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """a_ptr [rows, K] (row stride stride_am), b_ptr [E, K, N] (strides stride_be,
    stride_bk, 1), c_ptr [num_valid_tokens, N] (row = slot, stride stride_cm).
    Slots outside [0, num_valid_tokens) are neither read nor written; a block whose
    expert id is outside [0, num_experts) writes zeros (as the forward kernel)."""
    if ALIGNED:
        K = K // 16 * 16
        N = N // 16 * 16
        stride_am = stride_am // 16 * 16
        stride_be = stride_be // 16 * 16
        stride_bk = stride_bk // 16 * 16
        stride_cm = stride_cm // 16 * 16
    pid_m, pid_n = grouped_tile(EM, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    if pid_m * BLOCK_SIZE_M >= tl.load(num_tokens_post_padded_ptr):
        return

    slot, slot_ok, _, offs_n, c_ptrs, c_mask = block_slots(pid_m, pid_n, sorted_token_ids_ptr, c_ptr, EM, N,
                                                           num_valid_tokens, stride_cm, BLOCK_SIZE_M, BLOCK_SIZE_N)
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if (expert < 0) | (expert >= num_experts):
        tl.store(c_ptrs, tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], c_ptr.dtype.element_ty), mask=c_mask)
        return

    offs_bn = offs_n % N  # wrapped: B loads need no column mask (the store masks)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_row = (slot // top_k).to(tl.int64)
    a_ptrs = a_ptr + a_row[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_k[:, None].to(tl.int64) * stride_bk + offs_bn[None, :]
    acc = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_left = K - kb * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc=acc)
        a_ptrs += BLOCK_SIZE_K
        b_ptrs += BLOCK_SIZE_K * stride_bk
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def moe_wgrad_kernel(dy_ptr, x_ptr, dw_ptr, topk_weights_ptr, sorted_token_ids_ptr, expert_ids_ptr,
                     num_tokens_post_padded_ptr, N, K, num_valid_tokens, top_k_dy, top_k_x,
                     stride_dym, stride_xm, stride_dwe, stride_dwn, num_experts,
                     MUL_ROUTED_WEIGHT: tl.constexpr, ALIGNED: tl.constexpr, BLOCK_SIZE_M: tl.constexpr,
                     BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, SCAN_BLOCK: tl.constexpr):
    """dy_ptr [rows_dy, N] (row stride stride_dym), x_ptr [rows_x, K] (stride_xm),
    dw_ptr [E, N, K] (strides stride_dwe, stride_dwn, 1), topk_weights_ptr fp32
    [num_valid_tokens] (MUL_ROUTED_WEIGHT). Every element of dW[0:num_experts] is
    written (zeros for an expert without tokens)."""
    if ALIGNED:
        K = K // 16 * 16
        N = N // 16 * 16
        stride_dym = stride_dym // 16 * 16
        stride_xm = stride_xm // 16 * 16
        stride_dwe = stride_dwe // 16 * 16
        stride_dwn = stride_dwn // 16 * 16
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_k = tl.cdiv(K, BLOCK_SIZE_K)
    expert = pid // (num_pid_n * num_pid_k)
    pid_n = (pid % (num_pid_n * num_pid_k)) // num_pid_k
    pid_k = pid % num_pid_k

    # moe_align lays the blocks out expert by expert: this expert's blocks are
    # the `count` blocks after the `first` blocks of lower ids.
    num_blocks = tl.load(num_tokens_post_padded_ptr) // BLOCK_SIZE_M
    first = 0
    count = 0
    for b0 in range(0, num_blocks, SCAN_BLOCK):
        offs_b = b0 + tl.arange(0, SCAN_BLOCK)
        ids = tl.load(expert_ids_ptr + offs_b, mask=offs_b < num_blocks, other=num_experts)
        first += tl.sum((ids < expert).to(tl.int32))
        count += tl.sum((ids == expert).to(tl.int32))

    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    offs_k = pid_k * BLOCK_SIZE_K + tl.arange(0, BLOCK_SIZE_K)
    n_ok = offs_n < N
    k_ok = offs_k < K
    acc = tl.zeros([BLOCK_SIZE_N, BLOCK_SIZE_K], dtype=tl.float32)
    for blk in range(first, first + count):
        offs_m = blk * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
        slot = tl.load(sorted_token_ids_ptr + offs_m)
        slot_ok = (slot >= 0) & (slot < num_valid_tokens)
        dy_row = (slot // top_k_dy).to(tl.int64)
        x_row = (slot // top_k_x).to(tl.int64)
        dy = tl.load(dy_ptr + dy_row[:, None] * stride_dym + offs_n[None, :],
                     mask=slot_ok[:, None] & n_ok[None, :], other=0.0)
        if MUL_ROUTED_WEIGHT:
            w = tl.load(topk_weights_ptr + slot, mask=slot_ok, other=0.0)
            dy = (dy.to(tl.float32) * w[:, None]).to(dy_ptr.dtype.element_ty)
        x = tl.load(x_ptr + x_row[:, None] * stride_xm + offs_k[None, :],
                    mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(tl.trans(dy), x, acc=acc)
    dw_ptrs = dw_ptr + expert.to(tl.int64) * stride_dwe + offs_n[:, None].to(tl.int64) * stride_dwn + offs_k[None, :]
    tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=n_ok[:, None] & k_ok[None, :])
