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
    absolute row / column indices inside that (sequence, head). The random
    stream index is philox_offset + (bh * max_seqlen_q + m) * max_seqlen_k + n,
    truncated to 32 bits (wrap-around only repeats the stream, it stays
    deterministic).
    """
    base = (bh * max_seqlen_q).to(tl.int64)
    linear = (base + offs_m[:, None].to(tl.int64)) * max_seqlen_k + offs_n[None, :].to(tl.int64)
    linear = (linear + philox_offset).to(tl.uint32, bitcast=False)
    return tl.rand(seed, linear) > dropout_p
