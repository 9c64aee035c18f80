"""Grouped GEMM over experts with integer weights and fp16/bf16 activations
(weight-only quantization: vLLM's int8 w8a16 and int4 w4a16 MoE paths).

Same slot/expert contract as grouped_gemm.fused_moe_kernel (read its
docstring): C[slot] = A[slot // top_k] @ dequant(B[expert(slot)])^T
[* topk_weights[slot]], sentinel and negative slots neither read nor written,
a block whose expert id is outside [0, E) writes zeros.

Weights (the b pointer type):
  int8: b int8 [E, N, K] (K contiguous), b_scale fp32 [E, N] per output channel:
     W[n, k] = b[n, k] * s[n]. The scale factors out of the K sum: the dot
     runs on the exact int8 values (converted to the activation dtype, exact
     for |q| <= 128 in fp16 and bf16) and the epilogue multiplies by s[n].
  uint8 (int4 packed): b uint8 [E, N, K // 2] (bytes contiguous along K): byte j of row n holds
     k = 2j in its low nibble and k = 2j + 1 in its high nibble (unsigned 0..15).
     b_scale fp32 [E, N, K // group_size], b_zp uint8 [E, cdiv(N, 2), K // group_size]
     (two zero points per byte along N: low nibble = even n), or none (has_zp
     = 0: zero point 8). W[n, k] = (q[n, k] - zp[n, g]) * s[n, g], g = k // group_size.
     Each K tile lies in one group (group_size % BLOCK_SIZE_K == 0, checked by
     the caller): the tile's dot runs on the exact (q - zp) values in [-15, 15]
     and is scaled per column before it joins the fp32 accumulator.

Constexprs
  functional: MUL_ROUTED_WEIGHT, BLOCK_SIZE_M (= the align block size);
              dtypes through the pointer types: A and C fp16 or bf16 (the
              same), B int8 (w8a16) or uint8 (packed int4, w4a16). Built for aligned shapes only: K, N and the row
              strides (of A and C; of B in bytes) multiples of 16.
  tuning:     BLOCK_SIZE_N, BLOCK_SIZE_K (64 for int4: divides group sizes
              64 and 128), GROUP_SIZE_M, num_warps, num_stages.
Grid: (cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N), 1, 1), as fused_moe_kernel.
"""
import triton
import triton.language as tl

from .expert_tiles import block_slots, grouped_tile


@triton.jit
def _unpack_int4_along_k(p, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_K // 2, BLOCK_N] bytes -> [BLOCK_K, BLOCK_N] nibbles (row 2j: low, 2j + 1: high)."""
    lo = p & 0xF
    hi = p >> 4
    both = tl.join(lo, hi)                    # [BLOCK_K // 2, BLOCK_N, 2]
    both = tl.permute(both, (0, 2, 1))        # [BLOCK_K // 2, 2, BLOCK_N]
    return tl.reshape(both, (BLOCK_K, BLOCK_N))


@triton.jit
def fused_moe_wq_kernel(a_ptr, b_ptr, c_ptr, b_scale_ptr, b_zp_ptr, topk_weights_ptr,
                        sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                        N, K, EM, num_valid_tokens, top_k,
                        stride_am, stride_be, stride_bn, stride_cm,
                        stride_bse, stride_bsn, stride_bsk, stride_bze, stride_bzn, stride_bzk,
                        group_size, has_zp, num_experts,
                        MUL_ROUTED_WEIGHT: tl.constexpr,
                        BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                        BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """One BLOCK_SIZE_M x BLOCK_SIZE_N tile of C for one expert block.

    a_ptr [rows, K] fp16/bf16 (row stride stride_am); b_ptr int8 [E, N, K] or
    uint8 [E, N, K // 2] (strides stride_be, stride_bn, 1; in elements of b);
    c_ptr [num_valid_tokens, N] (row stride stride_cm); b_scale_ptr fp32 and
    b_zp_ptr uint8 as the module docstring says (b_zp unused unless has_zp != 0,
    the stride_bsk/stride_bz* and group_size unused for 8-bit);
    topk_weights_ptr fp32 [num_valid_tokens]; index pointers int32; scalars i32.
    """
    # Aligned-only kernel: state it so loads and stores vectorize.
    K = K // 16 * 16
    N = N // 16 * 16
    stride_am = stride_am // 16 * 16
    stride_be = stride_be // 16 * 16
    stride_bn = stride_bn // 16 * 16
    stride_cm = stride_cm // 16 * 16
    pid_m, pid_n = grouped_tile(EM, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        return

    slot, slot_ok, slot64, offs_n, c_ptrs, c_mask = block_slots(pid_m, pid_n, sorted_token_ids_ptr, c_ptr, EM, N,
                                                                num_valid_tokens, stride_cm, BLOCK_SIZE_M,
                                                                BLOCK_SIZE_N)

    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if (expert < 0) | (expert >= num_experts):
        tl.store(c_ptrs, tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], c_ptr.dtype.element_ty), mask=c_mask)
        return

    offs_bn = offs_n % N  # wrapped: B loads need no N mask (the store masks columns)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_row = (slot // top_k).to(tl.int64)
    a_ptrs = a_ptr + a_row[:, None] * stride_am + offs_k[None, :]
    bs_ptrs = b_scale_ptr + expert * stride_bse + offs_bn * stride_bsn
    acc = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    if b_ptr.dtype.element_ty == tl.int8:
        b_ptrs = b_ptr + expert * stride_be + offs_k[:, None] + offs_bn[None, :] * stride_bn
        for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            k_left = K - kb * BLOCK_SIZE_K
            a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0)
            acc = tl.dot(a, b.to(a.dtype), acc=acc)
            a_ptrs += BLOCK_SIZE_K
            b_ptrs += BLOCK_SIZE_K
        acc *= tl.load(bs_ptrs)[None, :]
    else:
        HALF_K: tl.constexpr = BLOCK_SIZE_K // 2
        offs_kp = tl.arange(0, HALF_K)
        b_ptrs = b_ptr + expert * stride_be + offs_kp[:, None] + offs_bn[None, :] * stride_bn
        zp_ptrs = b_zp_ptr + expert * stride_bze + (offs_bn // 2) * stride_bzn
        zp_shift = (offs_bn % 2) * 4
        use_zp = (offs_bn >= 0) & (has_zp != 0)  # all true or all false
        for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            k_left = K - kb * BLOCK_SIZE_K
            g = (kb * BLOCK_SIZE_K) // group_size
            a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
            p = tl.load(b_ptrs, mask=offs_kp[:, None] < k_left // 2, other=0)
            q = _unpack_int4_along_k(p, BLOCK_SIZE_K, BLOCK_SIZE_N).to(tl.int32)
            # Without zero points, 0x88 reads as 8 in either nibble.
            zp = tl.load(zp_ptrs + g * stride_bzk, mask=use_zp, other=0x88)
            zp = (zp.to(tl.int32) >> zp_shift) & 0xF
            w = (q - zp[None, :]).to(a.dtype)
            s = tl.load(bs_ptrs + g * stride_bsk)
            acc += tl.dot(a, w) * s[None, :]
            a_ptrs += BLOCK_SIZE_K
            b_ptrs += HALF_K

    if MUL_ROUTED_WEIGHT:
        wt = tl.load(topk_weights_ptr + slot64, mask=slot_ok, other=0.0)
        acc *= wt[:, None]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
