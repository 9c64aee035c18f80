"""A decode program's first K/V rows into L2 before its grid dependency wait.

Under programmatic dependent launch (tritonsrc/pdl.py) attn_decode's programs become resident
while the kernel before it still runs (kv_append lets them start at once; in a replayed decode
step, the previous step's combine) and wait in griddepcontrol.wait while HBM idles. The cached
keys and values before this call's append are inputs, not the predecessor's output, so a program
can ask L2 for its split's first rows before it waits. Hints only: prefetch.global.L2 returns no
data and L2 is coherent (a row kv_append writes afterwards is simply updated there); a stale
cache_seqlens or block-table entry read before the wait costs bandwidth, never a wrong result,
and every hinted address lies in the cache (keys clamped to the sequence's last key, none for a
sequence without keys, table entries outside [0, num_blocks) replaced by block 0, head-dim offsets
clamped into the row).
"""
import triton
import triton.language as tl

from ..pdl import hint_l2
from .kv_cache import slot_offsets, token_slots

PREFETCH_BYTES = tl.constexpr(32768)  # K and V per program: one 64-key tile at D 128 in 16 bits


@triton.jit
def key_row_lines(table_row, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn, stride_vz, stride_vn,
                  BLOCK_DMODEL: tl.constexpr, ELEM_BYTES: tl.constexpr, PAGED: tl.constexpr, KEYS: tl.constexpr):
    """Element offsets (int64 [KEYS, lines], from the sequence's K and V head bases) of one
    128-byte line each of cache rows lo .. lo + KEYS - 1, clamped to hi - 1 (an empty split,
    lo >= hi, hints row max(hi - 1, 0): a row of the sequence's cache, never past it); the lines
    cover the first head_dim elements of a row. One block-table read per key for both."""
    LINE: tl.constexpr = 128 // ELEM_BYTES
    LINES: tl.constexpr = max(1, BLOCK_DMODEL // LINE)
    cols = tl.minimum(lo + tl.arange(0, KEYS), tl.maximum(hi - 1, 0))
    blk, row, _ = token_slots(table_row, cols, page_size, num_blocks, cols >= 0, PAGED)
    d = tl.minimum(tl.arange(0, LINES) * LINE, head_dim - 1)[None, :]
    return (slot_offsets(blk, row, stride_kz, stride_kn, PAGED)[:, None] + d,
            slot_offsets(blk, row, stride_vz, stride_vn, PAGED)[:, None] + d)


@triton.jit
def prefetch_split_keys(k_head, v_head, table_row, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn,
                        stride_vz, stride_vn, BLOCK_DMODEL: tl.constexpr, PAGED: tl.constexpr):
    """Hints L2 for the K and V rows of keys [lo, hi) this program reads first (about
    PREFETCH_BYTES of them). sm_90 PTX: called only where the kernel runs under PDL."""
    ELEM_BYTES: tl.constexpr = k_head.dtype.element_ty.primitive_bitwidth // 8
    KEYS: tl.constexpr = max(16, PREFETCH_BYTES // (2 * BLOCK_DMODEL * ELEM_BYTES))
    if hi > 0:  # a sequence without keys may have a cache of no rows (capacity 0): nothing to hint
        k_lines, v_lines = key_row_lines(table_row, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn,
                                         stride_vz, stride_vn, BLOCK_DMODEL, ELEM_BYTES, PAGED, KEYS)
        hint_l2(k_head + k_lines)
        hint_l2(v_head + v_lines)
