"""Grouped GEMM over experts (the vLLM fused_moe_kernel design).

C[slot, :] = (A[slot // top_k, :] @ B[expert(slot)]^T) [* topk_weights[slot]]
for every slot listed in sorted_token_ids (from moe_align_block_size, whose
block_size must equal BLOCK_SIZE_M). Sentinel entries (>= num_valid_tokens)
are neither read nor written, nor are negative ones. A block whose
expert_ids entry is -1, or any id outside [0, num_experts), writes zeros to
its valid rows (moe_align never produces such a block for a listed slot; the
behaviour is defined for callers that remap experts themselves, and keeps a
bad id from reading past the weights).
Per-slot A (the second GEMM, A = activation [M*topk, K]): pass top_k = 1.

Constexprs
  functional: MUL_ROUTED_WEIGHT (False/True),
              QUANT: 0 = none (A, B fp16 or bf16, same dtype),
                     1 = fp8 e4m3 w8a8 per-tensor: a_scale fp32 [1],
                         b_scale fp32 [E] with stride_bse (0 = one scalar),
                     2 = fp8 e4m3 w8a8 block: a_scale fp32 [rows of A, cdiv(K,128)]
                         (per token group of 128 along K), b_scale fp32
                         [E, cdiv(N,128), cdiv(K,128)] (128x128 blocks);
                     3 = fp8 e4m3 w8a8 per channel: a_scale fp32 [rows of A]
                         (per token, stride_asm), b_scale fp32 [E, N] (per
                         output channel, strides stride_bse, stride_bsn);
                         both factor out of the K sum: applied in the epilogue.
                         Built ALIGNED only (FP8-dynamic checkpoints).
              ALIGNED (False/True): K, N, stride_am, stride_be, stride_bn and
                     stride_cm all multiples of 16 (every real model; False
                     only for odd shapes like K = 511). Without it the compiler
                     cannot vectorize, pipeline with cp.async or use wgmma:
                     several times slower and spilling; treat it as a fallback.
              dtypes through the pointer types: A/B *fp16, *bf16 or *fp8e4nv,
              C *fp16 or *bf16. fp8 needs sm_89+: exclude QUANT 1/2 on sm_80.
  Layout: the last dim of A, B and C is contiguous (unit stride, no argument).
  tuning:     BLOCK_SIZE_M (16..128; = the align block_size), BLOCK_SIZE_N
              (32..256), BLOCK_SIZE_K (32..256; <= 128 when QUANT == 2 so a K
              tile sits inside one scale group), GROUP_SIZE_M (1..64),
              num_warps (4, 8), num_stages (2..5).
              SPLIT_K (functional, 1 or configs.GEMM_SPLIT_K): split s of SPLIT_K
              walks its share of the K tiles and writes its partial product to
              C row slot * SPLIT_K + s (C has num_valid_tokens * SPLIT_K rows; a
              sum over top_k * SPLIT_K consecutive rows reduces splits and
              experts at once: the decode GEMM2 with too few tiles for the SMs).
Grid: (cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N), SPLIT_K, 1), EM = length of
  sorted_token_ids (numel + E * (BLOCK_SIZE_M - 1)); programs whose M block
  starts at or past num_tokens_post_padded[0] exit at once.
Defaults per M bin (tokens; the table lives in configs.DEFAULT_CONFIGS), as
  (BM, BN, BK, GROUP_M, warps, stages), all compile-checked spill-free:
                  M <= 16          M <= 64          M <= 512         larger
  sm_90 fp16/bf16 16,64,128,1,4,4  16,128,128,1,4,4 64,128,64,8,4,4  128,128,64,16,8,4
  sm_90 fp8 tens. 16,64,128,1,4,4  16,128,128,1,4,4 64,128,128,8,4,3 128,128,128,16,8,3
  sm_90 fp8 block 16,64,128,1,4,4  16,128,128,1,4,4 64,128,128,8,4,3 128,128,128,16,8,3
  ALIGNED=False   16,64,64,1,4,2   16,64,64,1,4,2   64,64,64,8,8,2   64,64,64,8,8,2
  sm_80 (fp16/bf16 only): the sm_90 fp16 row (shared memory <= 110 KB).
  BM >= 64 with 4 or 8 warps lowers to wgmma on sm_90; BM = 16/32 to mma.sync.
  Shared memory (sm_90, fp16, stages-1 buffers): 16,64,128,s4: 60 KB;
  64,128,64,s4: 96 KB; 128,128,64,s4: 128 KB; 128,128,128,s3: 192 KB.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor
from .expert_tiles import block_slots, grouped_tile, split_k_tiles
from .l2_prefetch import prefetch_weight_tiles

SCALE_GROUP = tl.constexpr(128)  # block-quant group along K (A and B) and N (B)


@triton.jit
def fused_moe_kernel(a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, topk_weights_ptr,
                     sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                     N, K, EM, num_valid_tokens, top_k,
                     stride_am, stride_be, stride_bn, stride_cm,
                     stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk, num_experts,
                     MUL_ROUTED_WEIGHT: tl.constexpr, QUANT: tl.constexpr, ALIGNED: tl.constexpr,
                     BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                     BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr, SPLIT_K: tl.constexpr = 1,
                     USE_PDL: tl.constexpr = False):
    """One BLOCK_SIZE_M x BLOCK_SIZE_N tile of C for one expert block.

    a_ptr   [rows, K] activations (rows = M tokens, or M*topk slots with top_k=1),
            row stride stride_am, K contiguous
    b_ptr   [E, N, K] expert weights, strides (stride_be, stride_bn, 1)
    c_ptr   [num_valid_tokens, N] out, row = slot, row stride stride_cm, N contiguous
    a_scale_ptr  fp32: unused (QUANT 0), [1] (QUANT 1), [rows, cdiv(K,128)] with
                 (stride_asm, stride_ask) (QUANT 2), [rows] with stride_asm (QUANT 3)
    b_scale_ptr  fp32: unused (QUANT 0), [E] with stride_bse (QUANT 1),
                 [E, cdiv(N,128), cdiv(K,128)] with (stride_bse, stride_bsn, stride_bsk) (QUANT 2),
                 [E, N] with (stride_bse, stride_bsn) (QUANT 3)
    topk_weights_ptr fp32 [num_valid_tokens] contiguous (used if MUL_ROUTED_WEIGHT)
    sorted_token_ids_ptr int32 [EM], expert_ids_ptr int32 [EM / BLOCK_SIZE_M],
    num_tokens_post_padded_ptr int32 [1]
    N, K, EM, num_valid_tokens (= M * topk), top_k: i32; strides: i32 (row and
    expert offsets are widened to 64 bits inside).
    num_experts  E, the experts in b: a block whose expert id is outside
                 [0, E) writes zeros, like -1 (ids are user data: never read
                 past the weights); so does a slot id < 0 (not read, not written).
    ALIGNED: K, N, stride_am, stride_be, stride_bn, stride_cm are all multiples of 16.
    """
    # Decode GEMMs whose expert ids are final when they start (the quantized GEMM1 and every GEMM2
    # of fused_experts: a kernel between them and moe_align waited for it): their first weight
    # tiles into L2 while the predecessor finishes (l2_prefetch.py).
    L2_PREFETCH: tl.constexpr = USE_PDL and BLOCK_SIZE_M <= 32 and (MUL_ROUTED_WEIGHT or QUANT != 0)
    if L2_PREFETCH:
        ELEM: tl.constexpr = b_ptr.dtype.element_ty.primitive_bitwidth // 8
        prefetch_weight_tiles(b_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, EM, N, K,
                              stride_be.to(tl.int64) * ELEM, stride_bn.to(tl.int64) * ELEM, K.to(tl.int64) * ELEM,
                              num_experts, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M, SPLIT_K,
                              BLOCK_SIZE_K * ELEM)
    wait_for_predecessor(USE_PDL)
    if ALIGNED:
        # x // 16 * 16 == x under the ALIGNED contract, and tells the compiler
        # so: 16-byte vector loads/stores, cp.async / wgmma pipelining.
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
        kb_lo = 0  # kb_hi: computed at the loop, where the unsplit kernel always had it (same SASS)

    slot, slot_ok, slot64, offs_n, c_ptrs, c_mask = block_slots(pid_m, pid_n, sorted_token_ids_ptr, c_ptr, EM, N,
                                                                num_valid_tokens, stride_cm, BLOCK_SIZE_M,
                                                                BLOCK_SIZE_N)

    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if (expert < 0) | (expert >= num_experts):
        tl.store(c_ptrs, tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], c_ptr.dtype.element_ty), mask=c_mask)
        return

    # Wrap the N offsets so B loads need no N mask (the store masks columns).
    offs_bn = offs_n % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_row = (slot // top_k).to(tl.int64)
    a_ptrs = a_ptr + a_row[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_k[:, None] + offs_bn[None, :] * stride_bn
    if SPLIT_K > 1:
        a_ptrs += kb_lo * BLOCK_SIZE_K
        b_ptrs += kb_lo * BLOCK_SIZE_K
    if QUANT == 2:
        as_ptrs = a_scale_ptr + a_row * stride_asm
        if BLOCK_SIZE_N <= SCALE_GROUP:
            # The tile's valid columns lie in one 128-wide scale group (BLOCK_SIZE_N
            # divides 128): one scalar per K step, fewer registers than a vector.
            bs_ptrs = b_scale_ptr + expert * stride_bse + (pid_n * BLOCK_SIZE_N // SCALE_GROUP) * stride_bsn
        else:
            bs_ptrs = b_scale_ptr + expert * stride_bse + (offs_bn // SCALE_GROUP) * stride_bsn
        # The next K tile's scales load one iteration ahead: the pipeliner
        # stages only the dot operands, so a scale loaded where it is used
        # left a global round trip exposed per K tile (decode: the loop is
        # short and K long).
        if SPLIT_K > 1:  # the split's first K group
            kg_lo = (kb_lo * BLOCK_SIZE_K) // SCALE_GROUP
            a_s_next = tl.load(as_ptrs + kg_lo * stride_ask, mask=slot_ok, other=0.0)
            b_s_next = tl.load(bs_ptrs + kg_lo * stride_bsk)
        else:
            a_s_next = tl.load(as_ptrs, mask=slot_ok, other=0.0)
            b_s_next = tl.load(bs_ptrs)

    acc = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    if SPLIT_K == 1:
        kb_hi = tl.cdiv(K, BLOCK_SIZE_K)
    for kb in range(kb_lo, kb_hi):
        k_left = K - kb * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if QUANT == 2:
            a_s, b_s = a_s_next, b_s_next
            kg = ((kb + 1) * BLOCK_SIZE_K) // SCALE_GROUP
            more = kb + 1 < kb_hi
            a_s_next = tl.load(as_ptrs + kg * stride_ask, mask=slot_ok & more, other=0.0)
            b_s_next = tl.load(bs_ptrs + kg * stride_bsk, mask=more, other=0.0)  # a scalar or a vector
            if BLOCK_SIZE_N <= SCALE_GROUP:
                acc += tl.dot(a, b) * (a_s * b_s)[:, None]
            else:
                acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        elif QUANT == 1 or QUANT == 3:
            # sm_90's fp8 wgmma sums in ~14-bit fixed point, and Triton's sm_90
            # default (max_num_imprecise_acc 2**30) never promotes, so the error
            # grew with K (3% at K=512 through fused_experts). Promote to fp32
            # once per K tile, as the block path does (its dot starts from 0).
            acc = tl.dot(a, b, acc=acc, max_num_imprecise_acc=BLOCK_SIZE_K)
        else:
            acc = tl.dot(a, b, acc=acc)
        a_ptrs += BLOCK_SIZE_K
        b_ptrs += BLOCK_SIZE_K

    if QUANT == 1:
        acc *= tl.load(a_scale_ptr) * tl.load(b_scale_ptr + expert * stride_bse)
    if QUANT == 3:
        a_s = tl.load(a_scale_ptr + a_row * stride_asm, mask=slot_ok, other=0.0)
        b_s = tl.load(b_scale_ptr + expert * stride_bse + offs_bn * stride_bsn)
        acc *= a_s[:, None] * b_s[None, :]
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + slot64, mask=slot_ok, other=0.0)
        acc *= w[:, None]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
