"""Where each sequence's rows are: one definition for every flash kernel.

Varlen sequence b covers global rows [start, start + length) of its packed
tensor, with cu_seqlens read from user memory and made safe here:
    start  = clamp(cu_seqlens[b], 0, total_rows)
    end    = clamp(cu_seqlens[b + 1], start, total_rows)
    length = min(end - start, max_seqlen)
So a value out of range can never move a row outside [0, total_rows), a
decreasing pair is an empty sequence, and a sequence longer than max_seqlen
keeps its first max_seqlen rows (the grid, the dropout mask buffer and the
32-bit in-sequence offsets are all sized by max_seqlen). Rows outside every
sequence's range are not touched (not read, not written), exactly like the
padding rows after cu_seqlens[num_seqs]. The clamps cost a few scalar
instructions in the prologue; batched calls compile none of it.
"""
import triton
import triton.language as tl


@triton.jit
def sequence_bounds(cu_seqlens, off_z, total_rows, max_seqlen, IS_VARLEN: tl.constexpr):
    """(start, length) of sequence off_z: (0, max_seqlen) when batched."""
    if IS_VARLEN:
        start = tl.load(cu_seqlens + off_z)
        end = tl.load(cu_seqlens + off_z + 1)
        start = tl.minimum(tl.maximum(start, 0), total_rows)
        end = tl.minimum(tl.maximum(end, start), total_rows)
        length = tl.minimum(end - start, max_seqlen)
    else:
        start = 0
        length = max_seqlen
    return start, length
