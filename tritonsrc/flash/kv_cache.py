"""Where a token of a KV cache lives: one definition for the decode kernels.

A cache is either contiguous, [B, capacity, Hk, D] (row n of sequence b at
b*stride_z + n*stride_n), or paged, [num_blocks, page_size, Hk, D] with an
int32 block table [B, max_blocks] (row n of sequence b at
block_table[b, n // page_size]*stride_z + (n % page_size)*stride_n).

Both read user data and are made safe here:
  - the cached length cache_seqlens[b] is clamped into [0, capacity - seqlen_new],
    so the appended tokens always land inside the cache and the attended length
    cache_seqlens[b] + seqlen_new never exceeds the capacity;
  - a block-table entry outside [0, num_blocks) is replaced by block 0 for the
    address and reported as invalid: readers mask those keys out (they take no
    part in the softmax), the append kernel writes nothing there.
"""
import triton
import triton.language as tl


@triton.jit
def cached_length(cache_seqlens, b, seqlen_new, capacity):
    """Clamped tokens already in the cache of sequence b (before the append)."""
    n = tl.load(cache_seqlens + b)
    return tl.minimum(tl.maximum(n, 0), capacity - seqlen_new)


@triton.jit
def page_magic(page_size):
    """page_of's multiplier for this page size: one 64-bit division, before a loop."""
    return 0xFFFFFFFFFFFFFFFF // page_size.to(tl.uint64)


@triton.jit
def page_of(cols, magic):
    """cols // page_size for 0 <= cols < 2^31, magic = page_magic(page_size): the high
    64 bits of (cols + 1) * floor((2^64 - 1) / page_size), exact whenever
    (cols + 1) * page_size < 2^64. A few multiply-adds where a runtime 32-bit
    division per key took ~20 instructions of the per-key decode loop."""
    return tl.umulhi((cols + 1).to(tl.uint64), magic).to(tl.int32)


@triton.jit
def page_entries(table_row, cols, magic, valid):
    """Raw block-table entries of tokens `cols` (a tensor, or one tile's first
    key in the PAGE_TILES loop) of a paged cache (magic: page_magic); `valid` masks
    the reads of columns past the sequence (their page index may be past the
    table row). Split from checked_slots so a loop can read the next tile's
    entries one iteration ahead (the K/V address then waits on no load)."""
    return tl.load(table_row + page_of(cols, magic), mask=valid, other=0)


@triton.jit
def page_tile_bases(block, start, stride_kz, stride_kn, stride_vz, stride_vn):
    """64-bit K and V offsets of slot `start` of page `block` (one per tile)."""
    block = block.to(tl.int64)
    start = start.to(tl.int64)
    return block * stride_kz + start * stride_kn, block * stride_vz + start * stride_vn


@triton.jit
def checked_blocks(entries, num_blocks):
    """(block, in-range flag) of raw table entries: one outside [0, num_blocks)
    addresses block 0 and is reported invalid (its keys are masked out)."""
    ok = (entries >= 0) & (entries < num_blocks)
    return tl.where(ok, entries, 0), ok


@triton.jit
def checked_slots(entries, cols, page_size, magic, num_blocks, valid):
    """(block, row in block, in-range flag) from raw table entries."""
    blk, ok = checked_blocks(entries, num_blocks)
    return blk, cols - page_of(cols, magic) * page_size, ok & valid


@triton.jit
def token_slots(table_row, cols, page_size, num_blocks, valid, PAGED: tl.constexpr):
    """(block, row in block, in-range flag) of tokens `cols` of one sequence;
    the K and V caches share them (one block-table read for both).

    Contiguous: (0, cols), always in range (the sequence base is added by the
    caller). Paged: page lookup; `valid` masks the table reads of columns past
    the sequence (their page index may be past the table row).
    """
    if PAGED:
        magic = page_magic(page_size)
        return checked_slots(page_entries(table_row, cols, magic, valid), cols, page_size, magic, num_blocks, valid)
    else:
        return 0, cols, valid


@triton.jit
def slot_offsets(blk, row, stride_z, stride_n, PAGED: tl.constexpr):
    """64-bit element offsets of (block, row) slots in a cache with these strides."""
    if PAGED:
        return blk.to(tl.int64) * stride_z + row.to(tl.int64) * stride_n
    else:
        return row.to(tl.int64) * stride_n


@triton.jit
def sequence_caches(K, V, block_table, b, hk, stride_bt, stride_kz, stride_kh, stride_vz, stride_vh,
                    PAGED: tl.constexpr):
    """(block-table row, K base, V base) of sequence b, kv head hk: paged
    caches address through the table (slot_offsets adds the block), contiguous
    ones start at the sequence."""
    if PAGED:
        table_row = block_table + b.to(tl.int64) * stride_bt
        k_head = K + hk.to(tl.int64) * stride_kh
        v_head = V + hk.to(tl.int64) * stride_vh
    else:
        table_row = block_table
        k_head = K + b.to(tl.int64) * stride_kz + hk.to(tl.int64) * stride_kh
        v_head = V + b.to(tl.int64) * stride_vz + hk.to(tl.int64) * stride_vh
    return table_row, k_head, v_head
