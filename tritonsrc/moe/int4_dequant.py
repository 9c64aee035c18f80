"""int4 w4a16 helpers of grouped_gemm_wq.py: nibble unpacking and the
dequantization forms behind its INT4_DOT option, and the per-K-tile scale
and zero-point tiles. Packed layout: byte j of a weight row holds k = 2j in
its low nibble and k = 2j + 1 in its high nibble; OFFSET + q is an exact
16-bit float (fp16 1024 + q, bf16 128 + q) made by placing q under the
exponent bits, so no int-to-float convert is needed."""
import triton
import triton.language as tl


@triton.jit
def unpack_int4_along_k(p, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_K // 2, BLOCK_N] bytes -> [BLOCK_K, BLOCK_N] nibbles (row 2j: low, 2j + 1: high)."""
    lo = p & 0xF
    hi = p >> 4
    both = tl.join(lo, hi)                    # [BLOCK_K // 2, BLOCK_N, 2]
    both = tl.permute(both, (0, 2, 1))        # [BLOCK_K // 2, 2, BLOCK_N]
    return tl.reshape(both, (BLOCK_K, BLOCK_N))


@triton.jit
def offset_int4_words(wv, dtype: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """[ROWS, BLOCK_N] int32 words of packed int4 (word r = bytes 4r..4r+3 of a
    weight row, nibbles k = 8r .. 8r + 7) -> [8 * ROWS, BLOCK_N] values
    OFFSET + q in `dtype` (fp16: 1024 + q, bf16: 128 + q, both exact), in k order.

    Two nibbles per instruction: (word >> 4t) & 0x000F000F puts nibbles t and
    4 + t in the low bits of the two 16-bit halves, OR-ing the exponent of
    OFFSET makes each half the float OFFSET + q (the mantissa holds q).
    """
    if dtype == tl.float16:
        magic2: tl.constexpr = 0x64006400
    else:
        magic2: tl.constexpr = 0x43004300
    v0 = (wv & 0x000F000F) | magic2
    v1 = ((wv >> 4) & 0x000F000F) | magic2
    v2 = ((wv >> 8) & 0x000F000F) | magic2
    v3 = ((wv >> 12) & 0x000F000F) | magic2
    # (low half, high half) of v_t hold k = t and 4 + t of the word.
    p0 = tl.join(v0.to(tl.int16).to(dtype, bitcast=True), (v0 >> 16).to(tl.int16).to(dtype, bitcast=True))
    p1 = tl.join(v1.to(tl.int16).to(dtype, bitcast=True), (v1 >> 16).to(tl.int16).to(dtype, bitcast=True))
    p2 = tl.join(v2.to(tl.int16).to(dtype, bitcast=True), (v2 >> 16).to(tl.int16).to(dtype, bitcast=True))
    p3 = tl.join(v3.to(tl.int16).to(dtype, bitcast=True), (v3 >> 16).to(tl.int16).to(dtype, bitcast=True))
    # [ROWS, BLOCK_N, h, j1, j2] with t = 2 * j1 + j2, k = 8r + 4h + t.
    z = tl.join(tl.join(p0, p2), tl.join(p1, p3))
    z = tl.permute(z, (0, 2, 3, 4, 1))
    return tl.reshape(z, (8 * ROWS, BLOCK_N))


@triton.jit
def group_params(bs_ptrs, zp_ptrs, zp_shift, use_zp, k0s, K, subs_per_group_magic, stride_bsk, stride_bzk):
    """Scales (fp32) and zero points (int32 0..15) of the sub-blocks starting
    at k0s [SUB] (multiples of 64), as [BLOCK_N, SUB]. Past K the scale is 0
    (with a = 0 there, the sub-block adds 0); without zero points, 0x88 reads
    as 8 in either nibble.

    The group of sub-block j = k0 / 64 is j // d, d = group_size / 64, taken
    as umulhi(j + 1, subs_per_group_magic) with the magic floor((2^32 - 1) / d)
    from the caller (subs_per_group_magic): exact while (j + 1) * d < 2^32
    (any int32 K), one IMAD.HI where a runtime integer division took ~20
    instructions per element in the K loop (~30 of its ~460 per tile)."""
    g = tl.umulhi((k0s // 64 + 1).to(tl.uint32), subs_per_group_magic).to(tl.int32)
    k_in = k0s < K
    zp = tl.load(zp_ptrs[:, None] + g[None, :] * stride_bzk, mask=use_zp[:, None] & k_in[None, :], other=0x88)
    zp = (zp.to(tl.int32) >> zp_shift[:, None]) & 0xF
    s = tl.load(bs_ptrs[:, None] + g[None, :] * stride_bsk, mask=k_in[None, :], other=0.0)
    return s, zp


@triton.jit
def tile_column(x, j: tl.constexpr, SUB: tl.constexpr):
    """Column j of x [N, SUB] (SUB 1, 2 or 4) as [N], by register splits."""
    if SUB == 1:
        return tl.reshape(x, (x.shape[0],))
    elif SUB == 2:
        c0, c1 = tl.split(x)
        return c0 if j == 0 else c1
    else:
        # [N, 4] -> [N, 2 (j // 2), 2 (j % 2)]: the first split takes j % 2.
        even, odd = tl.split(tl.reshape(x, (x.shape[0], 2, 2)))
        c = even if j % 2 == 0 else odd
        c0, c1 = tl.split(c)
        return c0 if j // 2 == 0 else c1


@triton.jit
def offset_of(dtype: tl.constexpr):
    """OFFSET of offset_nibbles: a float whose last mantissa bits are free for q."""
    if dtype == tl.float16:
        return 1024.0
    else:
        return 128.0


@triton.jit
def offset_nibbles(q, dtype: tl.constexpr):
    """uint8 values 0..15 -> OFFSET + q in `dtype` (fp16 1024 + q, bf16 128 + q,
    exact): the exponent bits OR-ed above the nibble, no int-to-float convert
    (I2F issues at a quarter of the integer rate)."""
    if dtype == tl.float16:
        magic: tl.constexpr = 0x6400
    else:
        magic: tl.constexpr = 0x4300
    return (q.to(tl.int16) | magic).to(dtype, bitcast=True)


@triton.jit
def offset_nibbles_asm(p, high: tl.constexpr, dtype: tl.constexpr):
    """offset_nibbles of the low (high=False) or high nibbles of packed
    bytes, four bytes per 32-bit register: mask (and shift), then one PRMT per
    two weights lays each nibble under the exponent byte of OFFSET (0x64:
    fp16 1024 + q, 0x43: bf16 128 + q). About 7 instructions per 4 bytes
    where the compiler's per-byte extraction took ~20. PTX: the GPU only (the
    CPU interpreter runs INT4_DOT 2, the same values)."""
    if dtype == tl.float16:
        magic: tl.constexpr = "0x64646464"
    else:
        magic: tl.constexpr = "0x43434343"
    if high:
        nib: tl.constexpr = "shr.b32 t, $2, 4; and.b32 t, t, 0x0f0f0f0f;"
    else:
        nib: tl.constexpr = "and.b32 t, $2, 0x0f0f0f0f;"
    asm: tl.constexpr = ("{ .reg .b32 t; " + nib + " prmt.b32 $0, t, " + magic + ", 0x4140; prmt.b32 $1, t, "
                         + magic + ", 0x4342; }")
    if dtype == tl.float16:
        return tl.inline_asm_elementwise(asm, "=r,=r,r", [p], dtype=tl.float16, is_pure=True, pack=4)
    else:
        return tl.inline_asm_elementwise(asm, "=r,=r,r", [p], dtype=tl.bfloat16, is_pure=True, pack=4)
