"""int4 w4a16 grouped GEMM for decode on sm_90, in Gluon: the dequantized weights are wgmma's
register operand (issue 13.6; docs/notes-moe-perf.md, "int4 as wgmma's register operand").

Same contract and arguments as fused_moe_wq_kernel (tritonsrc/moe/grouped_gemm_wq.py) for
packed int4 weights (uint8 [E, N, K // 2], fp32 group scales [E, N, K // group_size], optional
packed zero points [E, cdiv(N, 2), K // group_size]) and fp16/bf16 activations: C[slot] =
A[slot // top_k] @ dequant(B[expert(slot)])^T [* topk_weights[slot]], sentinel and negative
slots neither read nor written, a block whose expert id is outside [0, E) writes zeros,
SPLIT_K partial rows slot * SPLIT_K + s. Align block size 16 only; K a multiple of
BLOCK_SIZE_K, which divides group_size (the operator picks it: 128 where the groups allow,
else 64).

Why: the Triton kernel dequantizes into tl.dot's B operand, which on sm_90 goes through shared
memory (stores, CTA barriers, ldmatrix) per 64-wide sub-block; ncu at M=1: 0.38 of the HBM
roofline, issue slots 35% busy, an eligible warp in 42% of cycles. Here the product is
transposed, C^T[n, m] = W[n, :] . x[m, :]: the dequantized weights are wgmma's A operand,
which may live in registers, and the few activation rows the shared-memory B operand (wgmma
N = 16).

The dot over K does not care in which order it visits k, as long as both operands use the same
order. Each thread loads BLOCK_SIZE_K / 8 contiguous bytes of a row, and the k order of a tile
is chosen so that their nibbles land exactly in the thread's A fragment: the conversion to the
wgmma operand layout moves no data (convert_layout(assert_trivial=True) proves it at compile
time; test/cpu/test_int4_wgmma_order.py checks the order). The activation tile is permuted
the same way on its way to shared memory.

Nibbles become 16-bit floats under the exponent of OFFSET (bf16 128 + q by PRMT; fp16 1024 + q,
or 1024 + 16 q for a high nibble, by one LOP3 per two weights), minus (OFFSET + zero point):
the exact integers q - zp in [-15, 15], so products are exact and each tile's fp32 sum is
scaled by its group's scale once.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

from .grouped_gemm_hopper import _grouped_tile


@gluon.jit
def _wait_for_predecessor(USE_PDL: gl.constexpr):
    """tritonsrc/pdl.py's wait_for_predecessor for Gluon kernels."""
    if USE_PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False,
                                  pack=1)
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)


@gluon.jit
def _prefetch_weight_tiles(b_ptr, expert_ids_ptr, ntpp_ptr, pid_m, pid_n, N, stride_be, stride_bn, row_bytes,
                           first_byte, num_experts, BLOCK_SIZE_M: gl.constexpr, BLOCK_SIZE_N: gl.constexpr,
                           TILE_ROW_BYTES: gl.constexpr):
    """l2_prefetch.prefetch_weight_tiles for this kernel (uint8 weights: strides in bytes): hints
    only, for a block in range whose expert id is in [0, num_experts), offsets clamped into the rows."""
    TILES: gl.constexpr = max(1, 32768 // (BLOCK_SIZE_N * TILE_ROW_BYTES))
    LINES: gl.constexpr = max(1, TILES * TILE_ROW_BYTES // 128)
    layout: gl.constexpr = gl.BlockedLayout([1, 1], [8, 4], [4, 1], [1, 0])
    expert = gl.load(expert_ids_ptr + pid_m).to(gl.int64)
    if (pid_m * BLOCK_SIZE_M < gl.load(ntpp_ptr)) & (expert >= 0) & (expert < num_experts):
        rows = (pid_n * BLOCK_SIZE_N + gl.arange(0, BLOCK_SIZE_N, layout=gl.SliceLayout(1, layout))) % N
        cols = first_byte + gl.arange(0, LINES, layout=gl.SliceLayout(0, layout)) * 128
        cols = gl.maximum(gl.minimum(cols, row_bytes - 1), 0)
        ptrs = (b_ptr + expert * stride_be + gl.expand_dims(rows.to(gl.int64) * stride_bn, 1) +
                gl.expand_dims(cols, 0))
        gl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=gl.int32,
                                  is_pure=False, pack=1)


@gluon.constexpr_function
def packed_layout(block_n, block_k):
    """[block_n, block_k // 8] int32 words of a K tile (8 nibbles a word): block_k // 32 contiguous
    words of a row per thread (register bits: the word bits below the top two, and row bit 3, row
    bit 6 for 128 rows), lanes over the top two word bits and row bits 0-2, warps over row bits
    4-5: the row bits of wgmma's A fragment (m64 per warpgroup)."""
    reg_words = (block_k // 32).bit_length() - 1
    reg = [[0, 1 << i] for i in range(reg_words)] + [[8, 0]] + ([[64, 0]] if block_n == 128 else [])
    lanes = [[0, 1 << reg_words], [0, 2 << reg_words], [1, 0], [2, 0], [4, 0]]
    return gl.DistributedLinearLayout(reg_bases=reg, lane_bases=lanes, warp_bases=[[16, 0], [32, 0]],
                                      block_bases=[], shape=[block_n, block_k // 8])


# The dot over K does not care in which order it visits k, as long as both operands agree.
# A K tile of 2^n weights has memory k bits m0..m(n-1): m0 the nibble, m1-m2 the byte in a
# word, m3..m(n-3) the word among a thread's contiguous words (registers), the top two the
# lane. wgmma's A fragment (k_width 2) holds logical k bit 0 in the two halves of a 32-bit
# register, k bits 1-2 in lanes and the rest in registers. bf16: logical k0 = m1 (one PRMT
# pairs two bytes' nibbles in a register), k1-k2 = the lane bits, k3.. = m0, m2, m3, ...
# fp16: k0 = m2 (one LOP3 masks nibbles j and j + 4 of a word into a register), k3.. = m0,
# m1, m3, ...
@gluon.constexpr_function
def _k_order(n, fp16=False):
    """Memory k bit of each logical k bit, highest logical bit first."""
    low = [1, 0, n - 1, n - 2, 2] if fp16 else [2, 0, n - 1, n - 2, 1]
    return list(range(n - 3, 2, -1)) + low


@gluon.constexpr_function
def bit_shape(rows, block_k):
    return [rows] + [2] * ((block_k).bit_length() - 1)


@gluon.constexpr_function
def weight_perm(block_k, fp16=False):
    """Permutation of _weights_operand's bit dims: [N, words..., byte bit 1, nibble, byte bit 0]
    (bf16) or [N, words..., nibble, byte bit 0, byte bit 1] (fp16)."""
    n = block_k.bit_length() - 1
    dim = {j: n - j for j in range(3, n)}
    dim.update({0: n - 2, 1: n - 1, 2: n} if fp16 else {2: n - 2, 0: n - 1, 1: n})
    return [0] + [dim[j] for j in _k_order(n, fp16)]


@gluon.constexpr_function
def activation_perm(block_k, fp16=False):
    """Permutation of a [M, 2, ..., 2] activation tile in memory k order (m(n-1) first)."""
    n = block_k.bit_length() - 1
    return [0] + [n - j for j in _k_order(n, fp16)]


@gluon.jit
def _activation_k(t, dtype: gl.constexpr, ROWS: gl.constexpr, BLOCK_K: gl.constexpr):
    """[ROWS, BLOCK_K] activations in memory k order -> the dot's k order."""
    t = _permute_bits(gl.reshape(t, bit_shape(ROWS, BLOCK_K)), activation_perm(BLOCK_K, dtype == gl.float16),
                      BLOCK_K)
    return gl.reshape(t, [ROWS, BLOCK_K])


@gluon.jit
def _permute_bits(t, p: gl.constexpr, BLOCK_K: gl.constexpr):
    """gl.permute by a constexpr list p of 7, 8 or 9 dims (BLOCK_K 64, 128, 256)."""
    if BLOCK_K == 64:
        return gl.permute(t, (p[0], p[1], p[2], p[3], p[4], p[5], p[6]))
    elif BLOCK_K == 128:
        return gl.permute(t, (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]))
    else:
        return gl.permute(t, (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]))


# The dequantization's PTX (test/cpu/test_int4_wgmma_order.py runs it on the CPU). $4: the word,
# $5 (and $6): the packed per-row constants; $0-$3: four registers of two 16-bit weights.
DEQUANT_BF16_ASM = gl.constexpr("{ .reg .b32 t, u, v; and.b32 t, $4, 0x0f0f0f0f; shr.b32 u, $4, 4; "
                                "and.b32 u, u, 0x0f0f0f0f; "
                                "prmt.b32 v, t, 0x43434343, 0x4140; sub.rn.bf16x2 $0, v, $5; "
                                "prmt.b32 v, t, 0x43434343, 0x4342; sub.rn.bf16x2 $1, v, $5; "
                                "prmt.b32 v, u, 0x43434343, 0x4140; sub.rn.bf16x2 $2, v, $5; "
                                "prmt.b32 v, u, 0x43434343, 0x4342; sub.rn.bf16x2 $3, v, $5; }")
DEQUANT_FP16_ASM = gl.constexpr("{ .reg .b32 v, u, s; mov.b32 s, 0x2c002c00; shr.b32 u, $4, 8; "
                                "lop3.b32 v, $4, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 $0, v, $5; "
                                "lop3.b32 v, $4, 0x00f000f0, 0x64006400, 0xea; fma.rn.f16x2 $1, v, s, $6; "
                                "lop3.b32 v, u, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 $2, v, $5; "
                                "lop3.b32 v, u, 0x00f000f0, 0x64006400, 0xea; fma.rn.f16x2 $3, v, s, $6; }")


@gluon.jit
def _dequant_words_bf16(w, c2):
    """bf16: int32 words (8 nibbles each) and the packed pair (128 + zp, 128 + zp) of each row ->
    four registers of two bf16 values q - zp each: (k 0, 2), (k 4, 6), (k 1, 3), (k 5, 7) of the
    word. PRMT lays two nibbles under the exponent byte 0x43 (128 + q, exact); one packed
    subtraction per two weights leaves the exact integers q - zp. 11 instructions a word."""
    return gl.inline_asm_elementwise(DEQUANT_BF16_ASM, "=r,=r,=r,=r,r,r", [w, c2],
                                     dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=True, pack=1)


@gluon.jit
def _dequant_words_fp16(w, c2, c2_hi):
    """fp16: int32 words and the packed pairs (1024 + zp) and -(64 + zp) of each row -> four
    registers of two fp16 values q - zp each: (k 0, 4), (k 1, 5), (k 2, 6), (k 3, 7) of the word.
    One LOP3 masks nibbles j and j + 4 under 0x6400: a low nibble gives 1024 + q, a high one
    1024 + 16 q, which q / 16 - (64 + zp) brings back (fp16 is exact on both: integers below
    2048, multiples of 1/16 below 128). 9 instructions a word (4 LOP3, 1 SHF, 2 HSUB2, 2 HFMA2)."""
    return gl.inline_asm_elementwise(DEQUANT_FP16_ASM, "=r,=r,=r,=r,r,r,r", [w, c2, c2_hi],
                                     dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=True, pack=1)


@gluon.jit
def _halves(r, dtype: gl.constexpr):
    """int32 holding two 16-bit floats -> [..., 2] of `dtype` (low half first), no instruction."""
    if dtype == gl.float16:
        lo, hi = gl.inline_asm_elementwise("mov.b32 {$0, $1}, $2;", "=h,=h,r", [r], dtype=(gl.float16, gl.float16),
                                           is_pure=True, pack=1)
    else:
        lo, hi = gl.inline_asm_elementwise("mov.b32 {$0, $1}, $2;", "=h,=h,r", [r],
                                           dtype=(gl.bfloat16, gl.bfloat16), is_pure=True, pack=1)
    return gl.join(lo, hi)


@gluon.jit
def _pair(v):
    """Two copies of a 16-bit pattern in an int32."""
    return v | (v << 16)


@gluon.jit
def _weights_operand(w, zp, dtype: gl.constexpr, a_layout: gl.constexpr, BLOCK_N: gl.constexpr,
                     BLOCK_K: gl.constexpr):
    """Packed words [BLOCK_N, BLOCK_K // 8] and zero points [BLOCK_N] (int32 0..15; constant 8
    without zero points, which the compiler folds) -> q - zp [BLOCK_N, BLOCK_K] in wgmma's A
    layout, the dot's k order: a register permutation only (assert_trivial)."""
    if dtype == gl.float16:
        c2 = gl.expand_dims(_pair(0x6400 | zp), 1)
        c2_hi = gl.expand_dims(_pair(0xD400 | (zp << 4)), 1)  # -(64 + zp): fp16's step at 64 is 1/16
        r0, r1, r2, r3 = _dequant_words_fp16(w, c2, c2_hi)
        r = gl.join(gl.join(r0, r1), gl.join(r2, r3))  # [N, word, nibble, byte bit 0]
    else:
        l01, l23, h01, h23 = _dequant_words_bf16(w, gl.expand_dims(_pair(0x4300 | zp), 1))
        r = gl.join(gl.join(l01, l23), gl.join(h01, h23))  # [N, word, byte bit 1, nibble]
    t = _halves(r, dtype)  # a last bit dim: byte bit 0 (bf16) or byte bit 1 (fp16)
    t = _permute_bits(gl.reshape(t, bit_shape(BLOCK_N, BLOCK_K)), weight_perm(BLOCK_K, dtype == gl.float16), BLOCK_K)
    return gl.convert_layout(gl.reshape(t, [BLOCK_N, BLOCK_K]), a_layout, assert_trivial=True)


@gluon.jit
def _tile_products(w, x_buf, x_buf_hi, zp, scale, acc, acc_hi, part_zero, dtype: gl.constexpr, a_op: gl.constexpr,
                   BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, TWO: gl.constexpr):
    """acc + scale * (the tile's dequantized packed weights w . the activation buffer), and with TWO
    the same dequantized weights times a second block's activations (x_buf_hi) into acc_hi: one
    dequantization for both. The products run one after the other, so one product's registers are
    live at a time."""
    a = _weights_operand(w, zp, dtype, a_op, BLOCK_N, BLOCK_K)
    tok = warpgroup_mma(a, x_buf.permute((1, 0)), part_zero, use_acc=False, is_async=True)
    part = warpgroup_mma_wait(num_outstanding=0, deps=(tok, ))
    acc = acc + part * gl.expand_dims(scale, 1)
    if TWO:
        tok = warpgroup_mma(a, x_buf_hi.permute((1, 0)), part_zero, use_acc=False, is_async=True)
        part = warpgroup_mma_wait(num_outstanding=0, deps=(tok, ))
        acc_hi = acc_hi + part * gl.expand_dims(scale, 1)
    return acc, acc_hi


# Blocks looked back at to place a block in its expert's run (PAIR_BLOCKS); even (see _pair_role).
PAIR_SCAN = gl.constexpr(8)


@gluon.jit
def _pair_role(expert_ids_ptr, pid_m, expert, ntpp, EM, BLOCK_SIZE_M: gl.constexpr):
    """PAIR_BLOCKS: 0 this program runs its block alone, 1 it also runs the next block (the same
    expert's), 2 the previous block's program runs this block (this one exits).
    An expert's blocks are consecutive. Its run's blocks at even positions 0, 2, .. PAIR_SCAN - 2
    lead a pair when the next block is the expert's too; odd positions up to PAIR_SCAN - 1 follow.
    The position comes from the PAIR_SCAN ids before the block; where all of them are the
    expert's (position >= PAIR_SCAN) the block runs alone, and so does its predecessor's program
    (position PAIR_SCAN - 1 is odd: it follows, it does not lead). Every block is run once."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    j = gl.arange(0, PAIR_SCAN, layout=layout)
    before = pid_m - PAIR_SCAN + j
    ids = gl.load(expert_ids_ptr + before, mask=before >= 0, other=-1)  # before block 0: no expert's
    nearest_other = gl.max(gl.where(ids != expert, j, -1), axis=0)
    position = PAIR_SCAN - 1 - nearest_other
    role = 0
    if nearest_other >= 0:
        if position % 2 == 1:
            role = 2
        # Under EM too: a num_tokens_post_padded past the sorted ids reads no expert id past the grid's.
        elif ((pid_m + 1) * BLOCK_SIZE_M < ntpp) & ((pid_m + 1) * BLOCK_SIZE_M < EM):
            if gl.load(expert_ids_ptr + pid_m + 1) == expert:
                role = 1
    return role


@gluon.jit
def _block_activations(a_ptr, sorted_token_ids_ptr, first, EM, num_valid_tokens, top_k, stride_am,
                       x_layout: gl.constexpr, BLOCK_SIZE_M: gl.constexpr, BLOCK_K: gl.constexpr):
    """Pointers to the activation rows (slot // top_k) of the block whose slots start at entry
    `first` of the sorted ids, and which rows are a token's. A slot that is no token's (padding, a
    sentinel) points at token 0's row: its column of C^T depends on that row alone and is never
    stored (the copies of X_DOT_ORDER skip it)."""
    x_m = first + gl.arange(0, BLOCK_SIZE_M, layout=gl.SliceLayout(1, x_layout))
    x_slot = gl.load(sorted_token_ids_ptr + x_m, mask=x_m < EM, other=num_valid_tokens)
    x_ok = (x_slot >= 0) & (x_slot < num_valid_tokens)
    x_row = gl.where(x_ok, x_slot // top_k, 0)
    x_k = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, x_layout))
    return a_ptr + gl.expand_dims(x_row.to(gl.int64) * stride_am, 1) + gl.expand_dims(x_k, 0), x_ok


@gluon.jit
def _store_block(acc, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, first, pid_n, N, EM, num_valid_tokens,
                 stride_cm, out_layout: gl.constexpr, MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_SIZE_M: gl.constexpr,
                 BLOCK_SIZE_N: gl.constexpr):
    """C rows (slots) of the block whose slots start at entry `first`: acc^T [* topk_weights]."""
    if MUL_ROUTED_WEIGHT:
        wt_m = first + gl.arange(0, BLOCK_SIZE_M, layout=gl.SliceLayout(0, acc.type.layout))
        wt_slot = gl.load(sorted_token_ids_ptr + wt_m, mask=wt_m < EM, other=num_valid_tokens)
        wt_ok = (wt_slot >= 0) & (wt_slot < num_valid_tokens)
        wt = gl.load(topk_weights_ptr + wt_slot.to(gl.int64), mask=wt_ok, other=0.0)
        acc = acc * gl.expand_dims(wt, 0)
    out_m = first + gl.arange(0, BLOCK_SIZE_M, layout=gl.SliceLayout(0, out_layout))
    out_slot = gl.load(sorted_token_ids_ptr + out_m, mask=out_m < EM, other=num_valid_tokens)
    out_ok = (out_slot >= 0) & (out_slot < num_valid_tokens)
    out_n = pid_n * BLOCK_SIZE_N + gl.arange(0, BLOCK_SIZE_N, layout=gl.SliceLayout(1, out_layout))
    c_ptrs = c_ptr + gl.expand_dims(out_slot.to(gl.int64) * stride_cm, 0) + gl.expand_dims(out_n, 1)
    c_mask = gl.expand_dims(out_ok, 0) & gl.expand_dims(out_n < N, 1)
    gl.store(c_ptrs, gl.convert_layout(acc.to(c_ptr.dtype.element_ty), out_layout), mask=c_mask)


@gluon.jit
def fused_moe_wq_hopper_kernel(a_ptr, b_ptr, c_ptr, b_scale_ptr, b_zp_ptr, topk_weights_ptr,
                               sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                               N, K, EM, num_valid_tokens, top_k,
                               stride_am, stride_be, stride_bn, stride_cm,
                               stride_bse, stride_bsn, stride_bsk, stride_bze, stride_bzn, stride_bzk,
                               group_size, has_zp, num_experts,
                               MUL_ROUTED_WEIGHT: gl.constexpr, BLOCK_SIZE_M: gl.constexpr, BLOCK_SIZE_N: gl.constexpr,
                               BLOCK_SIZE_K: gl.constexpr, GROUP_SIZE_M: gl.constexpr, SPLIT_K: gl.constexpr,
                               HAS_ZP: gl.constexpr, X_DOT_ORDER: gl.constexpr, PREFETCH: gl.constexpr,
                               NUM_STAGES: gl.constexpr = 4, LOAD_DISTANCE: gl.constexpr = 1,
                               PAIR_BLOCKS: gl.constexpr = False, USE_PDL: gl.constexpr = False):
    """One BLOCK_SIZE_N x BLOCK_SIZE_M tile of C^T; 4 warps (one warpgroup). BLOCK_SIZE_N 64 or
    128; BLOCK_SIZE_M 8 or 16 (the align block size); BLOCK_SIZE_K 64, 128 or 256, dividing
    group_size (one scale and zero point per row and K tile); PREFETCH: K tiles of weights
    loaded ahead into registers (1 or 2), or 0: a ring of NUM_STAGES tiles in shared memory
    filled by cp.async, each thread copying and later reading only its own 16-byte pieces (no
    CTA barrier for it). K a multiple of BLOCK_SIZE_K (the caller checks). HAS_ZP: zero points
    are read (has_zp, the runtime argument both weight-only kernels share, is not); without them
    every zero point is 8 and their loads and packing leave the loop. LOAD_DISTANCE 2 (the ring
    only): activations, scales and zero points loaded two K tiles ahead of their use in a loop
    unrolled by two (_k_loop_pairs; NUM_STAGES even, 4 or more: the ring holds pairs of tiles),
    1: one tile ahead (_k_loop). X_DOT_ORDER (LOAD_DISTANCE 2; fused_experts' route on sm_90, see
    rules_moe_hopper_wq.py): A holds each row's K tiles already in the dot's k order (dot_order_activations in
    python/jit/moe_quant.py), so the activation tiles are copied by cp.async into shared memory
    beside the weights, no register on the way; rows of no token are not read (zero-filled).
    PAIR_BLOCKS (X_DOT_ORDER): where an expert has two or more blocks (decode under uneven routing:
    17-32 slots), one program runs two of them, dequantizing each weight tile once for both
    (_pair_role says which); its successor's program exits. Without it each block dequantizes the
    same weights again (through L2), which is what M=64's random routing lost against balanced."""
    gl.static_assert(PREFETCH <= 2)
    gl.static_assert(LOAD_DISTANCE == 1 or (LOAD_DISTANCE == 2 and PREFETCH == 0))
    gl.static_assert(LOAD_DISTANCE == 1 or (NUM_STAGES % 2 == 0 and NUM_STAGES >= 4))
    gl.static_assert(LOAD_DISTANCE == 2 or not X_DOT_ORDER)
    gl.static_assert(X_DOT_ORDER or not PAIR_BLOCKS)
    BLOCK_K: gl.constexpr = BLOCK_SIZE_K
    dtype: gl.constexpr = a_ptr.dtype.element_ty
    # wgmma N: the block's slots.
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, BLOCK_SIZE_M, 16])
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    packed: gl.constexpr = packed_layout(BLOCK_SIZE_N, BLOCK_K)
    x_layout: gl.constexpr = gl.BlockedLayout([1, 8], [256 // BLOCK_K, BLOCK_K // 8], [4, 1], [1, 0])
    x_smem_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_SIZE_M, BLOCK_K], dtype)
    out_layout: gl.constexpr = gl.BlockedLayout([8, 1], [16, 2], [1, 4], [0, 1])

    # Aligned-only kernel, as fused_moe_wq_kernel: say so, so loads vectorize.
    N = N // 16 * 16
    stride_am = stride_am // 16 * 16
    stride_be = stride_be // 16 * 16
    stride_bn = stride_bn // 16 * 16
    stride_cm = stride_cm // 16 * 16

    pid_m, pid_n = _grouped_tile(EM, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    # The decode GEMM2 (and GEMM1 with the router weight on its input): its first weight tiles into
    # L2 while its predecessor finishes (tritonsrc/moe/l2_prefetch.py). Hints only: GEMM1 may start
    # after moe_dot_order_copy while moe_align still runs, and a stale id hints a wrong tile or none.
    if USE_PDL and MUL_ROUTED_WEIGHT:
        first_byte = 0
        if SPLIT_K > 1:
            first_byte = gl.program_id(1) * gl.cdiv(K // BLOCK_K, SPLIT_K) * (BLOCK_K // 2)
        _prefetch_weight_tiles(b_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, pid_m, pid_n, N, stride_be,
                               stride_bn, K // 2, first_byte, num_experts, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_K // 2)
    _wait_for_predecessor(USE_PDL)
    ntpp = gl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= ntpp:
        return
    num_kt = K // BLOCK_K
    if SPLIT_K > 1:
        pid_k = gl.program_id(1)
        per_split = gl.cdiv(num_kt, SPLIT_K)
        kt_lo = pid_k * per_split
        kt_hi = gl.minimum(kt_lo + per_split, num_kt)
        c_ptr += pid_k * stride_cm
        stride_cm = stride_cm * SPLIT_K
    else:
        kt_lo = 0
        kt_hi = num_kt

    first = pid_m * BLOCK_SIZE_M  # the block's first entry of the sorted ids
    expert = gl.load(expert_ids_ptr + pid_m).to(gl.int64)
    if (expert < 0) | (expert >= num_experts):
        _store_block(gl.zeros([BLOCK_SIZE_N, BLOCK_SIZE_M], gl.float32, layout=mma), c_ptr, topk_weights_ptr,
                     sorted_token_ids_ptr, first, pid_n, N, EM, num_valid_tokens, stride_cm, out_layout, False,
                     BLOCK_SIZE_M, BLOCK_SIZE_N)
        return
    role = 0
    if PAIR_BLOCKS:
        role = _pair_role(expert_ids_ptr, pid_m, expert, ntpp, EM, BLOCK_SIZE_M)
    if role == 2:
        return  # the previous block's program runs this block

    x_ptrs, x_ok = _block_activations(a_ptr, sorted_token_ids_ptr, first, EM, num_valid_tokens, top_k, stride_am,
                                      x_layout, BLOCK_SIZE_M, BLOCK_K)

    # Weight rows of the tile (wrapped past N: only masked columns of C see them).
    w_n = (pid_n * BLOCK_SIZE_N + gl.arange(0, BLOCK_SIZE_N, layout=gl.SliceLayout(1, packed))) % N
    w_j = gl.arange(0, BLOCK_K // 8, layout=gl.SliceLayout(0, packed))
    w_ptrs = (b_ptr.to(gl.pointer_type(gl.int32)) + expert * (stride_be // 4) +
              gl.expand_dims(w_n.to(gl.int64) * (stride_bn // 4), 1) + gl.expand_dims(w_j, 0))
    zp_ptrs = b_zp_ptr + expert * stride_bze + (w_n // 2) * stride_bzn
    zp_shift = (w_n % 2) * 4
    zp_none = gl.full([BLOCK_SIZE_N], 8, gl.int32, layout=gl.SliceLayout(1, packed))
    s_n = (pid_n * BLOCK_SIZE_N + gl.arange(0, BLOCK_SIZE_N, layout=gl.SliceLayout(1, mma))) % N
    s_ptrs = b_scale_ptr + expert * stride_bse + s_n * stride_bsn
    # The group of K tile t is t // (group_size // BLOCK_K), taken as umulhi(t + 1, magic) with
    # magic = floor((2^32 - 1) / d): exact while (t + 1) * d < 2^32 (one IMAD.HI in the loop).
    group_magic = 0xFFFFFFFF // (group_size // BLOCK_K).to(gl.uint32)

    acc = gl.zeros([BLOCK_SIZE_N, BLOCK_SIZE_M], gl.float32, layout=mma)
    part_zero = gl.zeros([BLOCK_SIZE_N, BLOCK_SIZE_M], gl.float32, layout=mma)
    last = gl.maximum(kt_hi - 1, 0)
    if PAIR_BLOCKS:  # a constexpr guard: without it role is 0 but the pair branch would still be compiled
        if role == 1:
            # This block and the next, the same expert's: each weight tile dequantized once for both.
            x_ptrs_hi, x_ok_hi = _block_activations(a_ptr, sorted_token_ids_ptr, first + BLOCK_SIZE_M, EM,
                                                    num_valid_tokens, top_k, stride_am, x_layout, BLOCK_SIZE_M,
                                                    BLOCK_K)
            acc, acc_hi = _k_loop_pairs(acc, part_zero, x_ptrs, gl.expand_dims(x_ok, 1), w_ptrs, s_ptrs, zp_ptrs,
                                        stride_bsk, stride_bzk, zp_shift, zp_none, group_magic, kt_lo, kt_hi, last,
                                        dtype, a_op, packed, x_smem_layout, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_K,
                                        HAS_ZP, X_DOT_ORDER, NUM_STAGES, x_ptrs_hi, gl.expand_dims(x_ok_hi, 1),
                                        part_zero, True)
            _store_block(acc_hi, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, first + BLOCK_SIZE_M, pid_n, N, EM,
                         num_valid_tokens, stride_cm, out_layout, MUL_ROUTED_WEIGHT, BLOCK_SIZE_M, BLOCK_SIZE_N)
        else:
            acc, _ = _k_loop_pairs(acc, part_zero, x_ptrs, gl.expand_dims(x_ok, 1), w_ptrs, s_ptrs, zp_ptrs,
                                   stride_bsk, stride_bzk, zp_shift, zp_none, group_magic, kt_lo, kt_hi, last, dtype,
                                   a_op, packed, x_smem_layout, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_K, HAS_ZP,
                                   X_DOT_ORDER, NUM_STAGES, x_ptrs, gl.expand_dims(x_ok, 1), part_zero, False)
    elif LOAD_DISTANCE == 2:
        acc, _ = _k_loop_pairs(acc, part_zero, x_ptrs, gl.expand_dims(x_ok, 1), w_ptrs, s_ptrs, zp_ptrs, stride_bsk,
                               stride_bzk, zp_shift, zp_none, group_magic, kt_lo, kt_hi, last, dtype, a_op, packed,
                               x_smem_layout, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_K, HAS_ZP, X_DOT_ORDER, NUM_STAGES,
                               x_ptrs, gl.expand_dims(x_ok, 1), part_zero, False)
    else:
        acc = _k_loop(acc, part_zero, x_ptrs, w_ptrs, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, zp_shift, zp_none,
                      group_magic, kt_lo, kt_hi, last, dtype, a_op, packed, x_smem_layout, BLOCK_SIZE_M,
                      BLOCK_SIZE_N, BLOCK_K, HAS_ZP, PREFETCH, NUM_STAGES)
    _store_block(acc, c_ptr, topk_weights_ptr, sorted_token_ids_ptr, first, pid_n, N, EM, num_valid_tokens, stride_cm,
                 out_layout, MUL_ROUTED_WEIGHT, BLOCK_SIZE_M, BLOCK_SIZE_N)


@gluon.jit
def _k_loop(acc, part_zero, x_ptrs, w_ptrs, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, zp_shift, zp_none,
            group_magic, kt_lo, kt_hi, last, dtype: gl.constexpr, a_op: gl.constexpr, packed: gl.constexpr,
            x_smem_layout: gl.constexpr, BLOCK_SIZE_M: gl.constexpr, BLOCK_SIZE_N: gl.constexpr,
            BLOCK_K: gl.constexpr, HAS_ZP: gl.constexpr, PREFETCH: gl.constexpr, NUM_STAGES: gl.constexpr):
    """The K loop: acc + the split's K tiles, one tile per pair of CTA barriers."""
    # One activation buffer: the barrier at the top of each iteration ends the last one's wgmma reads.
    buf = gl.allocate_shared_memory(dtype, [BLOCK_SIZE_M, BLOCK_K], x_smem_layout)

    # Software pipeline by hand: the packed weights PREFETCH tiles ahead (plain loads into
    # registers, or the cp.async ring), the activations, scales and zero points one tile ahead.
    # Loads past the range re-read its last tile; an empty split (kt_lo == kt_hi == num_kt)
    # reads tile num_kt - 1 (K >= BLOCK_K), never past the rows.
    first = gl.minimum(kt_lo, last)
    if PREFETCH == 0:
        w_ring = gl.allocate_shared_memory(gl.int32, [NUM_STAGES, BLOCK_SIZE_N, BLOCK_K // 8],
                                           gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
        for i in gl.static_range(NUM_STAGES - 1):
            async_copy.async_copy_global_to_shared(w_ring.index(i),
                                                   w_ptrs + gl.minimum(kt_lo + i, last) * (BLOCK_K // 8))
            async_copy.commit_group()
    else:
        w1 = gl.load(w_ptrs + first * (BLOCK_K // 8))
    if PREFETCH == 2:
        w2 = gl.load(w_ptrs + gl.minimum(kt_lo + 1, last) * (BLOCK_K // 8))
    s1, zp1 = _scale_and_zero_points(first, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
    x1 = gl.load(x_ptrs + first * BLOCK_K)
    for t in range(kt_lo, kt_hi):
        if PREFETCH > 0:
            w = w1
        zp = _unpacked_zero_points(zp1, zp_shift, zp_none, HAS_ZP)  # the raw bytes came a tile ahead
        scale = s1
        x = x1
        nxt = gl.minimum(t + 1, last)
        if PREFETCH == 2:
            w1 = w2
            w2 = gl.load(w_ptrs + gl.minimum(t + 2, last) * (BLOCK_K // 8))
        elif PREFETCH == 1:
            w1 = gl.load(w_ptrs + nxt * (BLOCK_K // 8))
        s1, zp1 = _scale_and_zero_points(nxt, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
        x1 = gl.load(x_ptrs + nxt * BLOCK_K)

        # Two CTA barriers an iteration, each ordering both buffers: this one ends last iteration's
        # reads of the ring slot the copy below refills and of the activation buffer (wgmma),
        # the one after the activation store starts this iteration's reads of both.
        gl.thread_barrier()
        if PREFETCH == 0:
            it = t - kt_lo
            async_copy.async_copy_global_to_shared(w_ring.index((it + NUM_STAGES - 1) % NUM_STAGES),
                                                   w_ptrs + gl.minimum(t + NUM_STAGES - 1, last) * (BLOCK_K // 8))
            async_copy.commit_group()
        buf.store(_activation_k(x, dtype, BLOCK_SIZE_M, BLOCK_K))
        fence_async_shared()
        if PREFETCH == 0:
            async_copy.wait_group(NUM_STAGES - 1)  # this thread's copies of tile t have landed
        gl.thread_barrier()
        if PREFETCH == 0:
            w = w_ring.index(it % NUM_STAGES).load(packed)
        acc, _ = _tile_products(w, buf, buf, zp, scale, acc, part_zero, part_zero, dtype, a_op, BLOCK_SIZE_N, BLOCK_K,
                                False)
    if PREFETCH == 0:
        # The ring's last copies (re-reads past the range) land before the CTA's shared memory
        # can go to another CTA.
        async_copy.wait_group(0)
    return acc


@gluon.jit
def _unpacked_zero_points(zp_raw, zp_shift, zp_none, HAS_ZP: gl.constexpr):
    """The zero points (int32 0..15) from their raw bytes, or the constant 8 without them."""
    if HAS_ZP:
        return (zp_raw.to(gl.int32) >> zp_shift) & 0xF
    else:
        return zp_none


@gluon.jit
def _scale_and_zero_points(tile, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP: gl.constexpr):
    """K tile `tile`'s scales and zero-point bytes (zp_none without zero points)."""
    g = gl.umulhi((tile + 1).to(gl.uint32), group_magic).to(gl.int32)
    if HAS_ZP:
        z = gl.load(zp_ptrs + g * stride_bzk)
    else:
        z = zp_none
    return gl.load(s_ptrs + g * stride_bsk), z


@gluon.jit
def _copy_tile_pair(even, odd, slot, ptrs, tile, last, TILE_STRIDE: gl.constexpr, mask=None):
    """K tiles `tile` and `tile + 1` (clamped to `last`, TILE_STRIDE elements apart) of a row set by
    cp.async into slot `slot` of its even and odd rings; masked rows are zero-filled, not read."""
    async_copy.async_copy_global_to_shared(even.index(slot), ptrs + gl.minimum(tile, last) * TILE_STRIDE, mask=mask)
    async_copy.async_copy_global_to_shared(odd.index(slot), ptrs + gl.minimum(tile + 1, last) * TILE_STRIDE,
                                           mask=mask)


@gluon.jit
def _k_loop_pairs(acc, part_zero, x_ptrs, x_rows_ok, w_ptrs, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, zp_shift,
                  zp_none, group_magic, kt_lo, kt_hi, last, dtype: gl.constexpr, a_op: gl.constexpr,
                  packed: gl.constexpr, x_smem_layout: gl.constexpr, BLOCK_SIZE_M: gl.constexpr,
                  BLOCK_SIZE_N: gl.constexpr, BLOCK_K: gl.constexpr, HAS_ZP: gl.constexpr, X_DOT_ORDER: gl.constexpr,
                  NUM_STAGES: gl.constexpr, x_ptrs_hi, x_rows_ok_hi, acc_hi, TWO: gl.constexpr):
    """_k_loop (the ring) with every global load about two tiles ahead of its first use. In _k_loop
    the next tile's activations and scale, loaded at the top of an iteration, are first read at its
    end (ptxas hoists the activations' permutation there, and the scales go through register
    copies), so each iteration waits for its own loads (ncu: long scoreboard, the largest stall).
    Here the loop is unrolled by two with two register sets (A: even tiles, B: odd) and two
    activation buffers: both tiles' activations are stored after the pair's first barrier and both
    sets reloaded right away, for the tiles two ahead, so the whole pair lies between a load and the
    permutation ptxas puts at the end of the body (`tools/sass_loops.py --load-use`); the scales and
    zero points are reloaded after the product that used them. One barrier pair publishes both
    buffers. An odd count's last odd tile is computed and dropped exactly (whatever the clamped
    tile holds).
    The weights: both tiles of the pair NUM_STAGES - 2 ahead are copied at the top, one commit
    group. A 64-row tile is 64 bytes of each weight row, so a row's two halves of a 128-byte line
    reach L2 and DRAM together (copied an iteration apart, one tile at a time, the loop ran 8-23%
    slower: H100, twenty-fifth session, bench/results/h100/int4_wgmma_sm90.json).
    X_DOT_ORDER: the activation tiles ride in the weights' commit groups, into rings of their own
    (x_even / x_odd, the same slots), and the loop holds no activation register.
    TWO (X_DOT_ORDER): a second block's activations (x_ptrs_hi) ride along in rings of their own,
    and each dequantized tile also goes into acc_hi. Returns (acc, acc_hi)."""
    ring_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    # Even and odd tiles in two allocations of NUM_STAGES / 2 slots (relative tile i in slot i // 2
    # of its parity's): the copies into one do not order those into the other (the compiler's
    # barrier analysis would put a CTA barrier between two copies into one allocation with computed
    # slots). Each thread copies and later reads only its own 16-byte pieces. NUM_STAGES - 2 tiles
    # in flight before the loop, in pairs.
    half: gl.constexpr = NUM_STAGES // 2
    ring_even = gl.allocate_shared_memory(gl.int32, [half, BLOCK_SIZE_N, BLOCK_K // 8], ring_layout)
    ring_odd = gl.allocate_shared_memory(gl.int32, [half, BLOCK_SIZE_N, BLOCK_K // 8], ring_layout)
    if X_DOT_ORDER:
        x_even = gl.allocate_shared_memory(dtype, [half, BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
        x_odd = gl.allocate_shared_memory(dtype, [half, BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
        if TWO:
            x_even_hi = gl.allocate_shared_memory(dtype, [half, BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
            x_odd_hi = gl.allocate_shared_memory(dtype, [half, BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
    else:
        # Two buffers in two allocations (stores to distinct allocations need no barrier between them).
        buf_a = gl.allocate_shared_memory(dtype, [BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
        buf_b = gl.allocate_shared_memory(dtype, [BLOCK_SIZE_M, BLOCK_K], x_smem_layout)
    for i in gl.static_range(half - 1):
        _copy_tile_pair(ring_even, ring_odd, i, w_ptrs, kt_lo + 2 * i, last, BLOCK_K // 8)
        if X_DOT_ORDER:
            _copy_tile_pair(x_even, x_odd, i, x_ptrs, kt_lo + 2 * i, last, BLOCK_K, x_rows_ok)
            if TWO:
                _copy_tile_pair(x_even_hi, x_odd_hi, i, x_ptrs_hi, kt_lo + 2 * i, last, BLOCK_K, x_rows_ok_hi)
        async_copy.commit_group()
    ta = gl.minimum(kt_lo, last)
    tb = gl.minimum(kt_lo + 1, last)
    if not X_DOT_ORDER:
        xa = gl.load(x_ptrs + ta * BLOCK_K)
        xb = gl.load(x_ptrs + tb * BLOCK_K)
    sa, za = _scale_and_zero_points(ta, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
    sb, zb = _scale_and_zero_points(tb, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
    n = kt_hi - kt_lo
    for t in range(kt_lo, kt_lo + n + n % 2, 2):
        pair = (t - kt_lo) // 2
        # Ends the last pair's reads of both buffers and both ring slots (its products waited for
        # their wgmma).
        gl.thread_barrier()
        # Tiles t + NUM_STAGES - 2 and - 1 into the slots of t - 2 and t - 1, one commit group.
        slot = (pair + half - 1) % half
        _copy_tile_pair(ring_even, ring_odd, slot, w_ptrs, t + NUM_STAGES - 2, last, BLOCK_K // 8)
        if X_DOT_ORDER:
            _copy_tile_pair(x_even, x_odd, slot, x_ptrs, t + NUM_STAGES - 2, last, BLOCK_K, x_rows_ok)
            if TWO:
                _copy_tile_pair(x_even_hi, x_odd_hi, slot, x_ptrs_hi, t + NUM_STAGES - 2, last, BLOCK_K, x_rows_ok_hi)
        async_copy.commit_group()
        if X_DOT_ORDER:
            ta = gl.minimum(t + 2, last)
            tb = gl.minimum(t + 3, last)
            # This thread's copies of tiles t and t + 1 have landed. The CTA barrier that publishes every
            # thread's copies is the compiler's (its barrier analysis puts one after the wait, since the
            # copied shared memory is read next); a thread_barrier here too made 3 a pair in the SASS.
            async_copy.wait_group(half - 1)
            fence_async_shared()  # the activation copies before wgmma reads them (async proxy)
            x_a = x_even.index(pair % half)
            x_b = x_odd.index(pair % half)
            x_a_hi = x_a
            x_b_hi = x_b
            if TWO:
                x_a_hi = x_even_hi.index(pair % half)
                x_b_hi = x_odd_hi.index(pair % half)
        else:
            buf_a.store(_activation_k(xa, dtype, BLOCK_SIZE_M, BLOCK_K))
            buf_b.store(_activation_k(xb, dtype, BLOCK_SIZE_M, BLOCK_K))
            ta = gl.minimum(t + 2, last)
            tb = gl.minimum(t + 3, last)
            xa = gl.load(x_ptrs + ta * BLOCK_K)
            xb = gl.load(x_ptrs + tb * BLOCK_K)
            fence_async_shared()
            async_copy.wait_group(half - 1)  # this thread's copies of tiles t and t + 1 have landed
            x_a = buf_a
            x_b = buf_b
            x_a_hi = x_a
            x_b_hi = x_b
            gl.thread_barrier()
        # Tile t, set A.
        w = ring_even.index(pair % half).load(packed)
        acc, acc_hi = _tile_products(w, x_a, x_a_hi, _unpacked_zero_points(za, zp_shift, zp_none, HAS_ZP), sa, acc,
                                     acc_hi, part_zero, dtype, a_op, BLOCK_SIZE_N, BLOCK_K, TWO)
        sa, za = _scale_and_zero_points(ta, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
        # Tile t + 1, set B.
        w = ring_odd.index(pair % half).load(packed)
        acc_b, acc_b_hi = _tile_products(w, x_b, x_b_hi, _unpacked_zero_points(zb, zp_shift, zp_none, HAS_ZP), sb,
                                         acc, acc_hi, part_zero, dtype, a_op, BLOCK_SIZE_N, BLOCK_K, TWO)
        acc = gl.where(t + 1 < kt_hi, acc_b, acc)
        if TWO:
            acc_hi = gl.where(t + 1 < kt_hi, acc_b_hi, acc_hi)
        sb, zb = _scale_and_zero_points(tb, s_ptrs, zp_ptrs, stride_bsk, stride_bzk, group_magic, zp_none, HAS_ZP)
    # The ring's last copies (re-reads past the range) land before the CTA's shared memory can go
    # to another CTA.
    async_copy.wait_group(0)
    return acc, acc_hi
