"""moe_align_block_size: group token slots by expert, pad each expert to block_size.

Input: topk_ids int32 [numel] (numel = M * topk, flattened, contiguous) and an
optional expert_map int32 [E_global] (global id -> local id, -1 = not on this
rank: that slot is skipped and never appears in the output). expert_map_len
= E_global (any value without a map): a global id outside [0, E_global) is
skipped too.
Outputs:
  sorted_token_ids int32 [max_num_tokens_padded], max_num_tokens_padded =
      numel + num_experts * (block_size - 1). Slot indices grouped by local
      expert, ascending flat index inside an expert (deterministic, no atomics),
      each expert padded to a multiple of block_size with the sentinel numel;
      everything after num_tokens_post_padded is the sentinel too.
  expert_ids int32 [num_blocks_total], num_blocks_total =
      cdiv(max_num_tokens_padded, block_size): local expert of each block, -1
      for blocks past num_tokens_post_padded. Empty experts get no block.
  num_tokens_post_padded int32 [1].
Every output element is written by the kernels: nothing needs zeroing.

Two paths (launch in this order, one stream):
  general, any numel (workspace: chunk_counts int32 [num_chunks * num_experts],
  expert_counts int32 [num_experts], expert_starts int32 [num_experts + 1];
  num_chunks = cdiv(numel, BLOCK_T) with the BLOCK_T of count/scatter):
    1. moe_align_count_kernel    grid (num_chunks, 1, 1)
    2. moe_align_scan_kernel     grid (cdiv(num_experts, BLOCK_EG), 1, 1)
    3. moe_align_offsets_kernel  grid (1, 1, 1)
    4. moe_align_scatter_kernel  grid (num_chunks, 1, 1)   (same BLOCK_T as 1.)
  small, numel <= BLOCK_T (decode): one launch, no workspace:
    moe_align_small_kernel       grid (1, 1, 1)
Inside a chunk the slots are ordered by one register sort of (expert, index)
keys; across chunks by per-expert prefix sums. No atomics anywhere.

Constexprs
  functional: HAS_EXPERT_MAP (False/True), BLOCK_E (16, 32, ..., 512:
              max(16, next_pow2(num_experts))); for the small kernel BLOCK_T is
              functional too (numel <= BLOCK_T: 64, 256, 1024).
  tuning:     BLOCK_T (count/scatter chunk, 128..1024 pow2, must match between
              the two), BLOCK_EG (scan experts per program, 16..128),
              BLOCK_C (scan chunk rows per step, 8..64), BLOCK_B (expert_ids
              blocks per step, 8..128 pow2), num_warps; num_stages 1.
Defaults (sm_90 and sm_80): count/scatter BLOCK_T=256, num_warps=4;
  BLOCK_B = clamp(4096 // BLOCK_E, 8, 128) (the scatter's [BLOCK_B, BLOCK_E] search
  tile, the small kernel's [BLOCK_B, BLOCK_E] expert-id store tile: <= 128 registers,
  no spills, checked for sm_80/sm_90);
  scan BLOCK_EG=32, BLOCK_C=32, num_warps=4; offsets num_warps=4;
  small BLOCK_T=64 (numel<=64) / 256 / 1024, num_warps=4 (8 for 1024).
  The small path suits decode (numel <= 1024): one launch instead of four.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor

FILL_TILE = tl.constexpr(1024)  # sentinel stores per step in the one-program kernel

@triton.jit
def _local_ids(topk_ids_ptr, expert_map_ptr, offs, numel, num_experts, expert_map_len,
               HAS_EXPERT_MAP: tl.constexpr):
    """Local expert of each slot, -1 for skipped or out-of-range slots (a
    global id outside [0, expert_map_len) is skipped, never looked up)."""
    ids = tl.load(topk_ids_ptr + offs, mask=offs < numel, other=-1)
    if HAS_EXPERT_MAP:
        ids = tl.load(expert_map_ptr + ids, mask=(ids >= 0) & (ids < expert_map_len), other=-1)
    return tl.where((ids >= 0) & (ids < num_experts), ids, -1)


@triton.jit
def slot_kept(topk_ids_ptr, expert_map_ptr, slot, num_experts, expert_map_len, mask):
    """Whether moe_align keeps slot (a tensor of slot indices): _local_ids' test with
    the expert map taken at run time (expert_map_len 0: none), for kernels that would
    otherwise need a functional per map mode for one lookup per row. Masked-off slots
    are not kept."""
    ids = tl.load(topk_ids_ptr + slot, mask=mask, other=-1)
    if expert_map_len > 0:
        ids = tl.load(expert_map_ptr + ids, mask=(ids >= 0) & (ids < expert_map_len), other=-1)
    return (ids >= 0) & (ids < num_experts)


@triton.jit
def _sort_chunk(ids, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr):
    """Order the chunk's slots by (expert, index): one register sort, no loop.

    Returns, for each sorted position j: its expert (BLOCK_E for a skipped
    slot, sorted last), its index inside the chunk, and j minus the number of
    kept slots of lower experts, i.e. its rank among the slots of its expert.
    """
    j = tl.arange(0, BLOCK_T)
    key = tl.sort(tl.where(ids >= 0, ids, BLOCK_E) * BLOCK_T + j)
    e = key // BLOCK_T
    hist = tl.histogram(ids, BLOCK_E, mask=ids >= 0)
    below = tl.cumsum(hist, axis=0) - hist
    rank = j - tl.gather(below, tl.where(e < BLOCK_E, e, 0), 0)
    return e, key % BLOCK_T, rank, hist


@triton.jit
def _write_expert_ids(expert_ids_ptr, ends, col_ok, total, block_size, num_blocks_total,
                      first, step, BLOCK_B: tl.constexpr):
    """expert_ids[b] = #experts whose padded range ends at or before b*block_size
    (empty experts are skipped that way), -1 once b*block_size >= total.
    Writes blocks first, first+step, ... in tiles of BLOCK_B."""
    for b0 in range(first, num_blocks_total, step):
        b = b0 + tl.arange(0, BLOCK_B)
        pos = b * block_size
        e = tl.sum(((ends[None, :] <= pos[:, None]) & col_ok[None, :]).to(tl.int32), axis=1)
        e = tl.where(pos < total, e, -1)
        tl.store(expert_ids_ptr + b, e, mask=b < num_blocks_total)


@triton.jit
def _fill_expert_ids(expert_ids_ptr, ends, padded, col_ok, total, block_size, num_blocks_total,
                     BLOCK_E: tl.constexpr, BLOCK_B: tl.constexpr):
    """expert_ids written expert by expert, for one program: expert e's padded range
    [ends - padded, ends) is padded // block_size blocks, stored in tiles of
    [BLOCK_B blocks, BLOCK_E experts]; blocks from total on get -1. No search, so
    the loop runs (most blocks of one expert) / BLOCK_B times: once at decode, where
    _write_expert_ids's per-block search over all experts cost 15 us for 256 experts
    (one cross-warp reduction per 16 blocks, 241 blocks)."""
    cols = tl.arange(0, BLOCK_E)
    n_blocks = tl.where(col_ok, padded // block_size, 0)
    first = (ends - padded) // block_size
    for j0 in range(0, tl.max(n_blocks, axis=0), BLOCK_B):
        j = j0 + tl.arange(0, BLOCK_B)
        ok = j[:, None] < n_blocks[None, :]
        tl.store(expert_ids_ptr + first[None, :] + j[:, None], tl.broadcast_to(cols[None, :], [BLOCK_B, BLOCK_E]),
                 mask=ok)
    for b0 in range(total // block_size, num_blocks_total, FILL_TILE):
        b = b0 + tl.arange(0, FILL_TILE)
        tl.store(expert_ids_ptr + b, tl.full([FILL_TILE], -1, tl.int32), mask=b < num_blocks_total)


@triton.jit
def moe_align_count_kernel(topk_ids_ptr, expert_map_ptr, chunk_counts_ptr, sorted_token_ids_ptr,
                           numel, num_experts, max_num_tokens_padded, expert_map_len,
                           HAS_EXPERT_MAP: tl.constexpr, BLOCK_E: tl.constexpr,
                           BLOCK_T: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Step 1: per-chunk expert histogram, and sentinel fill of sorted_token_ids.

    topk_ids_ptr          int32 [numel]
    expert_map_ptr        int32 [E_global] (unused unless HAS_EXPERT_MAP)
    chunk_counts_ptr      int32 [num_chunks, num_experts] out (row-major)
    sorted_token_ids_ptr  int32 [max_num_tokens_padded] out: all set to numel
    numel, num_experts, max_num_tokens_padded, expert_map_len: i32
    """
    wait_for_predecessor(USE_PDL)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    ids = _local_ids(topk_ids_ptr, expert_map_ptr, offs, numel, num_experts, expert_map_len, HAS_EXPERT_MAP)
    hist = tl.histogram(ids, BLOCK_E, mask=ids >= 0)
    cols = tl.arange(0, BLOCK_E)
    tl.store(chunk_counts_ptr + pid * num_experts + cols, hist, mask=cols < num_experts)
    # The scatter (a later launch) overwrites the valid slots.
    for s in range(pid * BLOCK_T, max_num_tokens_padded, nprog * BLOCK_T):
        p = s + tl.arange(0, BLOCK_T)
        tl.store(sorted_token_ids_ptr + p, tl.zeros([BLOCK_T], tl.int32) + numel,
                 mask=p < max_num_tokens_padded)


@triton.jit
def moe_align_scan_kernel(chunk_counts_ptr, expert_counts_ptr, num_chunks, num_experts,
                          BLOCK_EG: tl.constexpr, BLOCK_C: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Step 2: per expert, exclusive prefix over chunks (in place) and total count.

    chunk_counts_ptr  int32 [num_chunks, num_experts] in/out
    expert_counts_ptr int32 [num_experts] out
    num_chunks, num_experts: i32
    """
    wait_for_predecessor(USE_PDL)
    pid = tl.program_id(0)
    cols = pid * BLOCK_EG + tl.arange(0, BLOCK_EG)
    col_ok = cols < num_experts
    running = tl.zeros([BLOCK_EG], tl.int32)
    for c0 in range(0, num_chunks, BLOCK_C):
        r = c0 + tl.arange(0, BLOCK_C)
        m = (r < num_chunks)[:, None] & col_ok[None, :]
        ptrs = chunk_counts_ptr + r[:, None] * num_experts + cols[None, :]
        t = tl.load(ptrs, mask=m, other=0)
        tl.store(ptrs, tl.cumsum(t, axis=0) - t + running[None, :], mask=m)
        running += tl.sum(t, axis=0)
    tl.store(expert_counts_ptr + cols, running, mask=col_ok)


@triton.jit
def moe_align_offsets_kernel(expert_counts_ptr, expert_starts_ptr, num_tokens_post_padded_ptr,
                             num_experts, block_size, BLOCK_E: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Step 3: padded start of each expert and the padded total.

    expert_counts_ptr          int32 [num_experts]
    expert_starts_ptr          int32 [num_experts + 1] out ([num_experts] = total)
    num_tokens_post_padded_ptr int32 [1] out
    num_experts, block_size: i32
    """
    wait_for_predecessor(USE_PDL)
    cols = tl.arange(0, BLOCK_E)
    col_ok = cols < num_experts
    cnt = tl.load(expert_counts_ptr + cols, mask=col_ok, other=0)
    padded = (cnt + block_size - 1) // block_size * block_size
    ends = tl.cumsum(padded, axis=0)
    total = tl.sum(padded, axis=0)
    tl.store(expert_starts_ptr + cols, ends - padded, mask=col_ok)
    tl.store(expert_starts_ptr + num_experts, total)
    tl.store(num_tokens_post_padded_ptr, total)


@triton.jit
def moe_align_scatter_kernel(topk_ids_ptr, expert_map_ptr, chunk_counts_ptr, expert_starts_ptr,
                             sorted_token_ids_ptr, expert_ids_ptr,
                             numel, num_experts, block_size, num_blocks_total, expert_map_len,
                             HAS_EXPERT_MAP: tl.constexpr, BLOCK_E: tl.constexpr,
                             BLOCK_T: tl.constexpr, BLOCK_B: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Step 4: write each valid slot at start[e] + chunk prefix[c, e] + rank in chunk,
    and expert_ids (blocks shared out over the programs).

    topk_ids_ptr, expert_map_ptr: as in step 1
    chunk_counts_ptr  int32 [num_chunks, num_experts] (exclusive prefixes from step 2)
    expert_starts_ptr int32 [num_experts + 1] (from step 3)
    sorted_token_ids_ptr int32 [max_num_tokens_padded] out (valid slots)
    expert_ids_ptr    int32 [num_blocks_total] out
    numel, num_experts, block_size, num_blocks_total, expert_map_len: i32
    """
    wait_for_predecessor(USE_PDL)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    chunk_start = pid * BLOCK_T
    ids = _local_ids(topk_ids_ptr, expert_map_ptr, chunk_start + tl.arange(0, BLOCK_T), numel,
                     num_experts, expert_map_len, HAS_EXPERT_MAP)
    e, idx, rank, hist = _sort_chunk(ids, BLOCK_E, BLOCK_T)
    valid = e < BLOCK_E
    e = tl.where(valid, e, 0)
    base = tl.load(expert_starts_ptr + e, mask=valid, other=0)
    base += tl.load(chunk_counts_ptr + pid * num_experts + e, mask=valid, other=0)
    tl.store(sorted_token_ids_ptr + base + rank, chunk_start + idx, mask=valid)

    cols = tl.arange(0, BLOCK_E)
    col_ok = cols < num_experts
    ends = tl.load(expert_starts_ptr + 1 + cols, mask=col_ok, other=0)
    total = tl.load(expert_starts_ptr + num_experts)
    _write_expert_ids(expert_ids_ptr, ends, col_ok, total, block_size, num_blocks_total,
                      pid * BLOCK_B, nprog * BLOCK_B, BLOCK_B)


@triton.jit
def moe_align_small_kernel(topk_ids_ptr, expert_map_ptr,
                           sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                           numel, num_experts, block_size, max_num_tokens_padded,
                           num_blocks_total, expert_map_len,
                           HAS_EXPERT_MAP: tl.constexpr, BLOCK_E: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_B: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Whole alignment in one program, for numel <= BLOCK_T. No workspace.

    topk_ids_ptr, expert_map_ptr: as in the general path
    sorted_token_ids_ptr int32 [max_num_tokens_padded] out
    expert_ids_ptr       int32 [num_blocks_total] out
    num_tokens_post_padded_ptr int32 [1] out
    numel, num_experts, block_size, max_num_tokens_padded, num_blocks_total, expert_map_len: i32
    """
    wait_for_predecessor(USE_PDL)
    ids = _local_ids(topk_ids_ptr, expert_map_ptr, tl.arange(0, BLOCK_T), numel, num_experts,
                     expert_map_len, HAS_EXPERT_MAP)
    e, idx, rank, cnt = _sort_chunk(ids, BLOCK_E, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    col_ok = cols < num_experts
    padded = (cnt + block_size - 1) // block_size * block_size
    ends = tl.cumsum(padded, axis=0)
    total = tl.sum(padded, axis=0)
    tl.store(num_tokens_post_padded_ptr, total)
    for s in range(0, max_num_tokens_padded, FILL_TILE):
        p = s + tl.arange(0, FILL_TILE)
        tl.store(sorted_token_ids_ptr + p, tl.zeros([FILL_TILE], tl.int32) + numel,
                 mask=p < max_num_tokens_padded)
    _fill_expert_ids(expert_ids_ptr, ends, padded, col_ok, total, block_size, num_blocks_total, BLOCK_E, BLOCK_B)
    # The sentinel stores above and the slot stores below may hit the same
    # address from different threads: order them.
    tl.debug_barrier()
    valid = e < BLOCK_E
    e = tl.where(valid, e, 0)
    pos = tl.gather(ends - padded, e, 0) + rank
    tl.store(sorted_token_ids_ptr + pos, idx, mask=valid)
