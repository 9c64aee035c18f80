"""Philox dropout mask shared by the flash forward and backward kernels.

Both passes call `keep_mask` with the same arguments, so the backward
regenerates exactly the mask the forward used. The seed and base offset are
read from device memory by the kernels (graph-safe: a captured graph replays
with whatever the caller writes into those tensors).
"""
import triton
import triton.language as tl


@triton.jit
def keep_mask(seed, philox_offset, bh, offs_m, offs_n, max_seqlen_q, max_seqlen_k, dropout_p):
    """True where the element survives dropout.

    bh is batch * num_heads_q + head (the query head); offs_m / offs_n are
    absolute row / column indices inside that (sequence, head). Element
    (bh, m, n) draws the first word of Philox-4x32-10 with key = seed and
    counter = (lo32(x), hi32(x), bh, 0), x = philox_offset + m * max_seqlen_k
    + n in 64 bits: every (sequence, head) has its own counter word, so no two
    heads share a mask however long the sequences are, and inside a head the
    stream only repeats past 2^64 elements. For bh = 0 and x < 2^32 this is
    tl.rand(seed, x). max_seqlen_q is not part of the index (kept so the
    call sites stay the same).
    """
    x = offs_m[:, None].to(tl.int64) * max_seqlen_k + offs_n[None, :].to(tl.int64) + philox_offset
    c0 = x.to(tl.uint32)  # truncates: the low word
    c1 = (x >> 32).to(tl.uint32)
    c2 = tl.zeros_like(c0) + bh.to(tl.uint32)
    r, _, _, _ = tl.philox(seed, c0, c1, c2, tl.zeros_like(c0))
    return tl.uint_to_uniform_float(r) > dropout_p
