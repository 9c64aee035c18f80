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

    bh is batch * num_heads_q + head (the query head, < 2^16: a grid dim);
    offs_m / offs_n are absolute row / column indices inside that (sequence,
    head). Element (bh, m, n) draws the first word of Philox-4x32-10 with
    key = seed (lo, hi words) and counter
        (n, m, bh | hi32(philox_offset) << 16, lo32(philox_offset)):
    every element of every head has its own counter at any sequence length
    (nothing is folded into 32 bits), and calls whose offsets differ below
    2^48 never share one. The counter needs no per-element arithmetic.
    max_seqlen_q / max_seqlen_k are not part of it (kept so the call sites
    stay the same).
    """
    c0, c1 = tl.broadcast(offs_n[None, :].to(tl.uint32), offs_m[:, None].to(tl.uint32))
    off_lo = philox_offset.to(tl.uint32)  # truncates: the low word
    off_hi = (philox_offset >> 32).to(tl.uint32)
    c2 = tl.zeros_like(c0) + (bh.to(tl.uint32) | (off_hi << 16))
    c3 = tl.zeros_like(c0) + off_lo
    r, _, _, _ = tl.philox(seed, c0, c1, c2, c3)
    return tl.uint_to_uniform_float(r) > dropout_p
