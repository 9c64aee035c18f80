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
     K and group_size are multiples of 64 (checked by the caller); each
     64-wide sub-block of a K tile lies in one group: its dot runs on the
     exact (q - zp) values in [-15, 15] and is scaled per column before it
     joins the fp32 accumulator.

Constexprs
  functional: MUL_ROUTED_WEIGHT, BLOCK_SIZE_M (= the align block size);
              dtypes through the pointer types: A and C fp16 or bf16 (the
              same), B int8 (w8a16) or uint8 (packed int4, w4a16). Built for aligned shapes only: K, N and the row
              strides (of A and C; of B in bytes) multiples of 16.
  tuning:     BLOCK_SIZE_N, BLOCK_SIZE_K (int4: 64, 128 or 256, read as
              64-wide sub-blocks, one group each), GROUP_SIZE_M, num_warps,
              num_stages, INT4_DOT (int4: 0 per-nibble q - zp, 1 the offset
              dot; 2-4 even/odd nibble dots on the bytes as loaded: 3 and 4
              lay the nibbles by PRMT (inline PTX, GPU only), 3 takes the zero
              point out of the K sum by row sums, 2 and 4 subtract it in 16
              bits; 2 is 4 without PTX; see the kernel), SPLIT_K.
Grid: (cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N), SPLIT_K, 1), as fused_moe_kernel.

Split-K (SPLIT_K > 1; decode GEMMs with too few tiles to fill the GPU): split
s walks its share of the K tiles and writes its partial product to C row
slot * SPLIT_K + s (C then has num_valid_tokens * SPLIT_K rows), so a sum over
top_k * SPLIT_K consecutive rows (moe_sum) reduces splits and experts at once.
With 16-bit C each partial is rounded once; an fp32 C keeps them exact.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor
from .expert_tiles import block_slots, grouped_tile, split_k_tiles
from .l2_prefetch import prefetch_weight_tiles
from .int4_dequant import (group_params, offset_int4_words, offset_nibbles, offset_nibbles_asm, offset_of,
                           tile_column, unpack_int4_along_k)


@triton.jit
def fused_moe_wq_kernel(a_ptr, b_ptr, c_ptr, b_scale_ptr, b_zp_ptr, topk_weights_ptr,
                        sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                        N, K, EM, num_valid_tokens, top_k,
                        stride_am, stride_be, stride_bn, stride_cm,
                        stride_bse, stride_bsn, stride_bsk, stride_bze, stride_bzn, stride_bzk,
                        group_size, has_zp, num_experts,
                        MUL_ROUTED_WEIGHT: tl.constexpr,
                        BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                        BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr, INT4_DOT: tl.constexpr,
                        SPLIT_K: tl.constexpr, USE_PDL: tl.constexpr = False):
    """One BLOCK_SIZE_M x BLOCK_SIZE_N tile of C for one expert block.

    a_ptr [rows, K] fp16/bf16 (row stride stride_am); b_ptr int8 [E, N, K] or
    uint8 [E, N, K // 2] (strides stride_be, stride_bn, 1; in elements of b);
    c_ptr [num_valid_tokens * SPLIT_K, N] (row stride stride_cm); b_scale_ptr fp32 and
    b_zp_ptr uint8 as the module docstring says (b_zp unused unless has_zp != 0,
    the stride_bsk/stride_bz* and group_size unused for 8-bit);
    topk_weights_ptr fp32 [num_valid_tokens]; index pointers int32; scalars i32.
    """
    # Decode GEMM2 (its expert ids are final when it starts: GEMM1 waited for moe_align): the first
    # weight tiles into L2 while act_and_mul finishes (l2_prefetch.py).
    L2_PREFETCH: tl.constexpr = USE_PDL and BLOCK_SIZE_M <= 32 and MUL_ROUTED_WEIGHT
    if L2_PREFETCH:
        PACK: tl.constexpr = 1 if b_ptr.dtype.element_ty == tl.int8 else 2  # K elements per weight byte
        prefetch_weight_tiles(b_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, EM, N, K, stride_be, stride_bn,
                              K // PACK, num_experts, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M,
                              SPLIT_K, BLOCK_SIZE_K // PACK)
    wait_for_predecessor(USE_PDL)
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
    if SPLIT_K > 1:
        kb_lo, kb_hi, c_ptr, stride_cm = split_k_tiles(K, c_ptr, stride_cm, BLOCK_SIZE_K, SPLIT_K)
    else:
        kb_lo = 0  # kb_hi: computed at the loops, where the unsplit kernel always had it

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
    a_ptrs = a_ptr + a_row[:, None] * stride_am + (kb_lo * BLOCK_SIZE_K + offs_k)[None, :]
    bs_ptrs = b_scale_ptr + expert * stride_bse + offs_bn * stride_bsn
    acc = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    if b_ptr.dtype.element_ty == tl.int8:
        b_ptrs = b_ptr + expert * stride_be + (kb_lo * BLOCK_SIZE_K + offs_k)[:, None] + offs_bn[None, :] * stride_bn
        if SPLIT_K == 1:
            kb_hi = tl.cdiv(K, BLOCK_SIZE_K)
        for kb in range(kb_lo, kb_hi):
            k_left = K - kb * BLOCK_SIZE_K
            a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0)
            acc = tl.dot(a, b.to(a.dtype), acc=acc)
            a_ptrs += BLOCK_SIZE_K
            b_ptrs += BLOCK_SIZE_K
        acc *= tl.load(bs_ptrs)[None, :]
    else:
        # int4: K is a multiple of 64 (group sizes are multiples of 64 and
        # divide K; the operators check both), so a K tile is SUB sub-blocks
        # of 64 that each lie in one group and wholly inside or outside K:
        # the loads need only a uniform per-sub-block mask and stay 16-byte
        # copies (a K mask in steps of 16 cut them to 8-byte ones), and a tile
        # of BLOCK_SIZE_K reads BLOCK_SIZE_K / 2 contiguous bytes of each
        # weight row (32 at 64: a DRAM sector per row per tile).
        SUB: tl.constexpr = BLOCK_SIZE_K // 64
        offs_kp = tl.arange(0, 32)
        offs_k64 = tl.arange(0, 64)
        a_base = a_ptr + a_row[:, None] * stride_am + offs_k64[None, :]
        b_base = b_ptr + expert * stride_be + offs_kp[:, None] + offs_bn[None, :] * stride_bn
        zp_ptrs = b_zp_ptr + expert * stride_bze + (offs_bn // 2) * stride_bzn
        zp_shift = (offs_bn % 2) * 4
        use_zp = (offs_bn >= 0) & (has_zp != 0)  # all true or all false
        # INT4_DOT 1 (fp16/bf16 activations): the tensor cores multiply the
        # offset values OFFSET + q, made two nibbles per instruction from
        # 32-bit words, and the zero point leaves the K sum:
        #   sum_k a_k (q_k - zp) = dot(a, OFFSET + q) - (OFFSET + zp) * sum_k a_k,
        # about 4 instructions per weight byte instead of about 20 (unpack,
        # widen, subtract and convert each nibble): at decode sizes the
        # dequantization, not the memory, was the bound. Products are exact
        # and the fp32 sums carry OFFSET * sum|a| (at most 1024x the operands'
        # scale: 2^-14 relative, far below the 16-bit output's rounding).
        OFFSET_DOT: tl.constexpr = INT4_DOT == 1 and a_ptr.dtype.element_ty != tl.float32
        SPLIT_DOT: tl.constexpr = INT4_DOT >= 2 and a_ptr.dtype.element_ty != tl.float32
        if OFFSET_DOT:
            offs_w = tl.arange(0, 8)
            w_base = b_ptr.to(tl.pointer_type(tl.int32)) + expert * (stride_be // 4) + offs_w[:, None] \
                + offs_bn[None, :] * (stride_bn // 4)
        # The scales and zero points of the next K tile load one iteration
        # ahead: loaded where they are used, each sub-block waited a global
        # load round trip (the pipeliner stages only the dot operands), about
        # 1-3 us per tile at decode sizes on the H200.
        offs_sub = tl.arange(0, SUB)
        subs_per_group_magic = 0xFFFFFFFF // (group_size // 64).to(tl.uint32)  # group_params' divisor
        s_next, zp_next = group_params(bs_ptrs, zp_ptrs, zp_shift, use_zp, kb_lo * BLOCK_SIZE_K + offs_sub * 64, K,
                                        subs_per_group_magic, stride_bsk, stride_bzk)
        if SPLIT_K == 1:
            kb_hi = tl.cdiv(K, BLOCK_SIZE_K)
        for kb in range(kb_lo, kb_hi):
            s_tile, zp_tile = s_next, zp_next
            s_next, zp_next = group_params(bs_ptrs, zp_ptrs, zp_shift, use_zp,
                                            (kb + 1) * BLOCK_SIZE_K + offs_sub * 64, K, subs_per_group_magic,
                                            stride_bsk, stride_bzk)
            for sub in tl.static_range(SUB):
                k0 = kb * BLOCK_SIZE_K + sub * 64
                k_in = k0 < K
                a = tl.load(a_base + k0, mask=slot_ok[:, None] & k_in, other=0.0)
                s = tile_column(s_tile, sub, SUB)
                zp = tile_column(zp_tile, sub, SUB)
                if SPLIT_DOT:
                    # The nibbles as they lie: low = even k, high = odd k, each
                    # a [32, BLOCK_N] operand made by elementwise ops on the
                    # loaded bytes (no join/permute/reshape of the weights),
                    # so the compiler can load the bytes into the mma operand
                    # registers and dequantize there; the activations split
                    # instead (M rows, cheap).
                    p = tl.load(b_base + k0 // 2, mask=(offs_kp[:, None] >= 0) & k_in, other=0)
                    a_even, a_odd = tl.split(tl.reshape(a, (BLOCK_SIZE_M, 32, 2)))
                    if INT4_DOT == 2:  # the portable form of 4 (the CPU interpreter runs it)
                        lo = offset_nibbles(p & 0xF, a.dtype)
                        hi = offset_nibbles(p >> 4, a.dtype)
                    else:
                        lo = offset_nibbles_asm(p, False, a.dtype)
                        hi = offset_nibbles_asm(p, True, a.dtype)
                    if INT4_DOT == 3:  # the zero point leaves the K sum through row sums
                        part = tl.dot(a_even, lo)
                        part = tl.dot(a_odd, hi, acc=part)
                        row_sum = tl.sum(a.to(tl.float32), 1)
                        part -= row_sum[:, None] * (offset_of(a.dtype) + zp.to(tl.float32))[None, :]
                    else:  # 2, 4: subtracted from the 16-bit values (exact: small integers)
                        c = (offset_of(a.dtype) + zp.to(tl.float32)).to(a.dtype)[None, :]
                        part = tl.dot(a_even, lo - c)
                        part = tl.dot(a_odd, hi - c, acc=part)
                elif OFFSET_DOT:
                    wv = tl.load(w_base + k0 // 8, mask=(offs_w[:, None] >= 0) & k_in, other=0)
                    w = offset_int4_words(wv, a.dtype, 8, BLOCK_SIZE_N)
                    row_sum = tl.sum(a.to(tl.float32), 1)
                    part = tl.dot(a, w) - row_sum[:, None] * (offset_of(a.dtype) + zp.to(tl.float32))[None, :]
                else:
                    p = tl.load(b_base + k0 // 2, mask=(offs_kp[:, None] >= 0) & k_in, other=0)
                    q = unpack_int4_along_k(p, 64, BLOCK_SIZE_N).to(tl.int32)
                    w = (q - zp[None, :]).to(a.dtype)
                    part = tl.dot(a, w)
                acc += part * s[None, :]

    if MUL_ROUTED_WEIGHT:
        wt = tl.load(topk_weights_ptr + slot64, mask=slot_ok, other=0.0)
        acc *= wt[:, None]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
