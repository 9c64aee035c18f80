"""Attention over a KV cache (decode, speculative decode), split-KV style.

One program handles one kv head of one sequence, one chunk (split) of its
keys and a tile of BLOCK_M query rows, where the rows are (query token, query
head of this kv head's group): every K/V tile is read once for all the query
heads that share it (GQA). With num_splits > 1 each program writes its
normalised partial output (fp32) and log-sum-exp to a workspace and
decode_combine.py reduces them; with one split it writes O and LSE directly.

Constexprs
  FUNCTIONAL: dtype (fp16, bf16), BLOCK_DMODEL (64, 128, 256: head_dim runs
    padded in the bucket, head_dim % 8 == 0 keeps 16-byte loads), PAGED,
    SCORE_MOD (0 none, 1 softcap, 2 ALiBi), PAGE_TILES (how a paged cache is
    walked: 0 a table read and address per key; 1, page sizes a multiple of
    BLOCK_N, one per tile, a third of the loop's instructions; 2, page sizes
    dividing BLOCK_N, per key without a division: two thirds). The sliding
    window is runtime (it only moves the tile range and the edge masks).
  TUNING: BLOCK_M (query rows per program, >= 16 for tl.dot), BLOCK_N (keys per
    tile), num_warps, num_stages.

Grid: (num_splits, num_seqs * num_heads_k, cdiv(seqlen_q * group, BLOCK_M)),
group = num_heads_q // num_heads_k.

Keys: sequence b attends to its first seqlen_k = clamp(cache_seqlens[b]) +
seqlen_new cache rows (kv_cache.py: the clamp, paging, and invalid block-table
entries, whose keys are left out). Of the keys some query sees, [band_lo,
band_hi) (all of them without a window), split s covers [band_lo + s*chunk,
band_lo + (s+1)*chunk) with chunk = cdiv(cdiv(band_hi - band_lo, num_splits),
BLOCK_N) * BLOCK_N, so splits balance per sequence whatever the capacity
or the window.
Causal (flash-attn's, bottom-right aligned): query token i sees keys
j <= i + seqlen_k - seqlen_q. A row that sees no key gets O = 0 and
LSE = -inf.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor
from .attn_mods import LOG2E, SCORE_ALIBI, in_band, log2_scores, score_mod_params
from .kv_cache import (cached_length, checked_blocks, checked_slots, page_entries, page_magic, page_of,
                       page_tile_bases, sequence_caches, slot_offsets, token_slots)
from .kv_prefetch import prefetch_split_keys

LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _softmax_step(acc, l_i, m_i, s):
    """Online softmax over one tile of log2 scores s (masked keys at -inf):
    (P, rescaled acc, l_i, m_i)."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row may see no key yet: keep the exp2 arguments finite.
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    return p, acc, l_i, m_new


@triton.jit
def _decode_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, hi, offs_n, offs_d, d_ok, row_tok,
                  lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz, stride_kn, stride_vz,
                  stride_vn, BLOCK_N: tl.constexpr, PAGED: tl.constexpr, PAGE_STEPS: tl.constexpr,
                  MASKED: tl.constexpr, SCORE_MOD: tl.constexpr):
    """Key tiles [lo, hi), each key's slot looked up on its own (contiguous
    caches, and paged ones whose page size is not a multiple of BLOCK_N).
    PAGE_STEPS (page sizes dividing BLOCK_N; any lo): key n + BLOCK_N lies
    BLOCK_N // page_size pages after key n at the same place in its page, so
    each key's page is stepped and its in-page offset is loop-invariant: a
    table read per key and no division (540 SASS instructions per 64-key
    tile against 819 for the general lookup, sm_90 bf16 D128). MASKED=False:
    every key is inside the sequence and visible to every row (only invalid
    pages are masked, paged caches); MASKED: keys past hi and outside each
    row's band are masked."""
    if PAGED:  # the first tile's table entries; each iteration reads the next tile's
        magic = page_magic(page_size)
        if PAGE_STEPS:
            page = page_of(lo + offs_n, magic)
            in_page = lo + offs_n - page * page_size
            k_offs = in_page[:, None] * stride_kn + offs_d[None, :]
            v_offs = in_page[:, None] * stride_vn + offs_d[None, :]
            table_ptrs = table_row + page
            nxt = tl.load(table_ptrs, mask=lo + offs_n < hi, other=0)
        else:
            nxt = page_entries(table_row, lo + offs_n, magic, lo + offs_n < hi)
    else:
        magic = 0
        nxt = offs_n
    for start_n in tl.range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            n_in = cols < hi
        else:
            n_in = cols >= 0  # all true
        if PAGED and PAGE_STEPS:
            entries = nxt
            table_ptrs += BLOCK_N // page_size
            nxt = tl.load(table_ptrs, mask=cols + BLOCK_N < hi, other=0)
            blk, k_ok = checked_blocks(entries, num_blocks)
            k_ok = k_ok & n_in
            blk = blk.to(tl.int64)
            k_ptrs = k_head + (blk * stride_kz)[:, None] + k_offs
            v_ptrs = v_head + (blk * stride_vz)[:, None] + v_offs
        else:
            if PAGED:
                entries = nxt
                nxt = page_entries(table_row, cols + BLOCK_N, magic, cols + BLOCK_N < hi)
                blk, row, k_ok = checked_slots(entries, cols, page_size, magic, num_blocks, n_in)
            else:
                blk, row, k_ok = token_slots(table_row, cols, page_size, num_blocks, n_in, PAGED)
            k_ptrs = k_head + slot_offsets(blk, row, stride_kz, stride_kn, PAGED)[:, None] + offs_d[None, :]
            v_ptrs = v_head + slot_offsets(blk, row, stride_vz, stride_vn, PAGED)[:, None] + offs_d[None, :]
        if MASKED or PAGED:
            k = tl.load(k_ptrs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
        s = log2_scores(tl.dot(q, tl.trans(k)), row_tok[:, None], cols[None, :], qk_scale, mod0, mod1, SCORE_MOD)
        if MASKED:
            s = tl.where(k_ok[None, :] & in_band(row_tok[:, None], cols[None, :], lo_off, hi_off), s, float("-inf"))
        elif PAGED:
            s = tl.where(k_ok[None, :], s, float("-inf"))
        p, acc, l_i, m_i = _softmax_step(acc, l_i, m_i, s)
        if MASKED or PAGED:
            v = tl.load(v_ptrs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_i


@triton.jit
def _decode_page_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, hi, offs_n, offs_d, d_ok, row_tok,
                       lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz, stride_kn,
                       stride_vz, stride_vn, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                       SCORE_MOD: tl.constexpr):
    """Key tiles [lo, hi) of a paged cache whose pages hold whole tiles
    (page_size % BLOCK_N == 0, lo a multiple of BLOCK_N): one table entry and
    one 64-bit base per tile, the per-key offsets loop-invariant and 32-bit:
    353 SASS instructions per 64-key tile where the per-key gather of
    _decode_tiles spent 997 (sm_90). An invalid entry masks its whole tile."""
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_d[None, :]
    # The page and in-page offset of the next tile, stepped (tiles never straddle
    # pages): a runtime division and modulo per tile cost ~25 of its instructions.
    page = lo // page_size
    in_page = lo - page * page_size
    nxt = tl.load(table_row + page, mask=lo < hi, other=0)
    for start_n in tl.range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        entry = nxt  # read one tile ahead: the K/V addresses wait on no load
        tile_in_page = in_page
        in_page += BLOCK_N
        page = tl.where(in_page == page_size, page + 1, page)
        in_page = tl.where(in_page == page_size, 0, in_page)
        nxt = tl.load(table_row + page, mask=start_n + BLOCK_N < hi, other=0)
        block, tile_ok = checked_blocks(entry, num_blocks)
        k_base, v_base = page_tile_bases(block, tile_in_page, stride_kz, stride_kn, stride_vz, stride_vn)
        if MASKED:
            k_ok = (cols < hi) & tile_ok
            k = tl.load(k_head + k_base + k_offs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            k = tl.load(k_head + k_base + k_offs, mask=d_ok[None, :], other=0.0)
        s = log2_scores(tl.dot(q, tl.trans(k)), row_tok[:, None], cols[None, :], qk_scale, mod0, mod1, SCORE_MOD)
        if MASKED:
            s = tl.where(k_ok[None, :] & in_band(row_tok[:, None], cols[None, :], lo_off, hi_off), s, float("-inf"))
        else:
            s = tl.where(tile_ok, s, float("-inf"))
        p, acc, l_i, m_i = _softmax_step(acc, l_i, m_i, s)
        if MASKED:
            v = tl.load(v_head + v_base + v_offs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            v = tl.load(v_head + v_base + v_offs, mask=d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_i


@triton.jit
def _key_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, hi, offs_n, offs_d, d_ok, row_tok, lo_off, hi_off,
               qk_scale, mod0, mod1, page_size, num_blocks, stride_kz, stride_kn, stride_vz, stride_vn,
               BLOCK_N: tl.constexpr, PAGED: tl.constexpr, PAGE_TILES: tl.constexpr, MASKED: tl.constexpr,
               SCORE_MOD: tl.constexpr):
    """Key tiles [lo, hi) through the kernel's one tile path: one lookup per
    tile (PAGE_TILES 1), per key stepping whole pages (2) or per key (0). Both
    paths in one kernel (a runtime branch on the page size) took both loops'
    registers and shared memory (139 KB)."""
    if PAGE_TILES == 1:
        acc, l_i, m_i = _decode_page_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, hi, offs_n, offs_d, d_ok,
                                           row_tok, lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks,
                                           stride_kz, stride_kn, stride_vz, stride_vn, BLOCK_N, MASKED, SCORE_MOD)
    else:
        acc, l_i, m_i = _decode_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, hi, offs_n, offs_d, d_ok,
                                      row_tok, lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz,
                                      stride_kn, stride_vz, stride_vn, BLOCK_N, PAGED, PAGE_TILES == 2, MASKED,
                                      SCORE_MOD)
    return acc, l_i, m_i


@triton.jit
def split_key_range(cache_seqlens, b, seqlen_new, capacity, seqlen_q, causal, window_left, window_right, split,
                    num_splits, group, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The keys program (split, b, row block program_id(2)) attends to: (seqlen_k, diag, lo_off,
    hi_off, lo, hi, full_lo, full_hi), [lo, hi) its keys, [full_lo, full_hi) those every row sees."""
    seqlen_k = cached_length(cache_seqlens, b, seqlen_new, capacity) + seqlen_new
    # The band: query token i sees keys j with lo_off <= j - i <= hi_off,
    # offsets clamped to [-seqlen_q - 1, seqlen_k] (no overflow for any window).
    diag = seqlen_k - seqlen_q
    hi_off = seqlen_k
    if window_right >= 0:
        hi_off = tl.minimum(diag + tl.minimum(window_right, seqlen_k + seqlen_q), seqlen_k)
    if causal != 0:
        hi_off = tl.minimum(hi_off, diag)
    hi_off = tl.maximum(hi_off, -seqlen_q - 1)
    lo_off = -seqlen_q - 1
    if window_left >= 0:
        lo_off = tl.maximum(diag - tl.minimum(window_left, seqlen_k + seqlen_q), lo_off)
    # The splits share the keys some query token sees, [band_lo, band_hi), so
    # a sliding window keeps them balanced.
    # Tiles start at multiples of BLOCK_N (the band start rounded down; its
    # extra keys are masked): a tile never spans two pages when BLOCK_N
    # divides the page size.
    band_lo = (tl.minimum(tl.maximum(lo_off, 0), seqlen_k) // BLOCK_N) * BLOCK_N
    band_hi = tl.maximum(tl.minimum(seqlen_q + hi_off, seqlen_k), band_lo)
    chunk = tl.cdiv(tl.cdiv(band_hi - band_lo, num_splits), BLOCK_N) * BLOCK_N
    lo = band_lo + split * chunk
    hi = tl.minimum(lo + chunk, band_hi)
    # Keys of this split and tile: [lo, full_lo) and [full_hi, hi) are the
    # masked edges, every row sees all of [full_lo, full_hi).
    first_tok = tl.minimum(tl.program_id(2) * BLOCK_M // group, seqlen_q - 1)
    last_tok = tl.minimum((tl.program_id(2) * BLOCK_M + BLOCK_M - 1) // group, seqlen_q - 1)
    hi = tl.maximum(tl.minimum(hi, last_tok + hi_off + 1), lo)
    # (Rounded to tiles; below 0 the rounding does not matter: lo >= 0.)
    lo = tl.minimum(tl.maximum(lo, ((first_tok + lo_off) // BLOCK_N) * BLOCK_N), hi)
    full_lo = tl.minimum(tl.maximum(lo, tl.cdiv(last_tok + lo_off, BLOCK_N) * BLOCK_N), hi)
    full_hi = tl.maximum(tl.minimum(hi, first_tok + hi_off + 1), full_lo)
    full_hi = full_lo + ((full_hi - full_lo) // BLOCK_N) * BLOCK_N
    return seqlen_k, diag, lo_off, hi_off, lo, hi, full_lo, full_hi


# Sizes stay unspecialised under the JIT, as in the AOT build.
@triton.jit(do_not_specialize=["seqlen_q", "seqlen_new", "num_seqs", "num_heads_q", "num_heads_k", "head_dim",
                               "capacity", "num_blocks", "num_splits", "causal", "window_left", "window_right",
                               "stride_alibi_z"])
def attn_decode(
    Q, K, V, O, LSE, O_part, LSE_part, cache_seqlens, block_table,
    sm_scale,
    stride_qz, stride_qm, stride_qh,
    stride_kz, stride_kn, stride_kh,
    stride_vz, stride_vn, stride_vh,
    stride_oz, stride_om, stride_oh,
    stride_lse_z, stride_lse_h,
    stride_bt,
    seqlen_q, seqlen_new, num_seqs, num_heads_q, num_heads_k, head_dim,
    capacity, page_size, num_blocks, num_splits, causal,
    window_left, window_right, softcap, alibi_slopes, stride_alibi_z,
    BLOCK_DMODEL: tl.constexpr, PAGED: tl.constexpr, SCORE_MOD: tl.constexpr, PAGE_TILES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, USE_PDL: tl.constexpr = False,
):
    """O = softmax(sm_scale * Q K^T [causal]) V over each sequence's cached keys.

    Q, O         [B, seqlen_q, Hq, D] (strides z, m, h; last dim contiguous).
    K, V         contiguous cache [B, capacity, Hk, D] (strides z, n, h) or
                 paged [num_blocks, page_size, Hk, D] (z is the block stride).
    LSE          fp32 [B, Hq, seqlen_q] (strides z, h; rows contiguous),
                 natural-log logsumexp of the scaled scores.
    O_part, LSE_part  fp32 workspace (num_splits > 1 only): partial output row
                 r = (b * seqlen_q + i) * Hq + h of split s at
                 O_part + (s * rows + r) * head_dim, its lse at
                 LSE_part + s * rows + r, rows = num_seqs * seqlen_q * Hq.
    cache_seqlens  int32 [B]: tokens in the cache before this call's append.
    block_table  int32 [B, max_blocks] (row stride stride_bt), PAGED only.
    seqlen_new   tokens appended this call (already written by kv_append).
    capacity     tokens one sequence can hold: capacity (contiguous) or
                 max_blocks * page_size (paged).
    causal       0/1, bottom-right aligned.
    window_left, window_right  sliding window (flash-attn's, bottom-right
                 aligned): query i sees keys j with
                 i + diag - window_left <= j <= i + diag + window_right,
                 diag = seqlen_k - seqlen_q; -1 = unbounded; causal caps
                 window_right at 0. Tiles outside the band are not visited.
    softcap      SCORE_MOD 1: scores become softcap * tanh(scores / softcap).
    alibi_slopes SCORE_MOD 2: fp32, slope of (b, h) at b * stride_alibi_z + h;
                 scores get - slope * |i + diag - j|.
    """
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads_k
    hk = bh % num_heads_k
    group = num_heads_q // num_heads_k
    table_row, k_head, v_head = sequence_caches(K, V, block_table, b, hk, stride_bt, stride_kz, stride_kh, stride_vz,
                                                stride_vh, PAGED)  # addresses only: nothing read
    if USE_PDL:
        # Before the dependency wait: L2 hints for this split's first K/V rows (kv_prefetch.py),
        # from a key range worked out of cache_seqlens as it is now. The predecessor may still
        # write any input, so everything below reads them again after the wait.
        _, _, _, _, lo, hi, _, _ = split_key_range(cache_seqlens, b, seqlen_new, capacity, seqlen_q, causal,
                                                   window_left, window_right, split, num_splits, group, BLOCK_M,
                                                   BLOCK_N)
        prefetch_split_keys(k_head, v_head, table_row, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn,
                            stride_vz, stride_vn, BLOCK_DMODEL, PAGED)
    wait_for_predecessor(USE_PDL)
    rows = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_tok = rows // group
    row_head = hk * group + rows % group
    row_ok = row_tok < seqlen_q
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    # (head_dim // 8) * 8 == head_dim (the operator requires it); written so,
    # the compiler knows the d mask is constant over groups of 8: 16-byte loads.
    d_ok = offs_d < (head_dim // 8) * 8
    q_ptrs = Q + b.to(tl.int64) * stride_qz + row_tok[:, None] * stride_qm + row_head[:, None] * stride_qh \
        + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    seqlen_k, diag, lo_off, hi_off, lo, hi, full_lo, full_hi = split_key_range(
        cache_seqlens, b, seqlen_new, capacity, seqlen_q, causal, window_left, window_right, split, num_splits, group,
        BLOCK_M, BLOCK_N)

    qk_scale = sm_scale * LOG2E
    if SCORE_MOD == SCORE_ALIBI:
        # A tile's rows mix query heads: one slope per row, [BLOCK_M, 1].
        mod0 = tl.load(alibi_slopes + b.to(tl.int64) * stride_alibi_z + row_head, mask=row_ok, other=0.0) * LOG2E
        mod0 = mod0[:, None]
        mod1 = diag
    else:
        mod0, mod1 = score_mod_params(sm_scale, softcap, alibi_slopes, seqlen_q, seqlen_k, SCORE_MOD)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DMODEL], dtype=tl.float32)
    # Masked edges [lo, full_lo) and [full_hi, hi) around the unmasked [full_lo, full_hi).
    acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, lo, full_lo, offs_n, offs_d, d_ok,
                               row_tok, lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz,
                               stride_kn, stride_vz, stride_vn, BLOCK_N, PAGED, PAGE_TILES, True, SCORE_MOD)
    acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, full_lo, full_hi, offs_n, offs_d, d_ok,
                               row_tok, lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz,
                               stride_kn, stride_vz, stride_vn, BLOCK_N, PAGED, PAGE_TILES, False, SCORE_MOD)
    acc, l_i, m_i = _key_tiles(acc, l_i, m_i, q, k_head, v_head, table_row, full_hi, hi, offs_n, offs_d, d_ok,
                               row_tok, lo_off, hi_off, qk_scale, mod0, mod1, page_size, num_blocks, stride_kz,
                               stride_kn, stride_vz, stride_vn, BLOCK_N, PAGED, PAGE_TILES, True, SCORE_MOD)

    # Rows that saw no key: O = 0, LSE = -inf (not NaN).
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * LN2)
    if num_splits == 1:
        o_ptrs = O + b.to(tl.int64) * stride_oz + row_tok[:, None] * stride_om + row_head[:, None] * stride_oh \
            + offs_d[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
        lse_ptrs = LSE + b.to(tl.int64) * stride_lse_z + row_head * stride_lse_h + row_tok
        tl.store(lse_ptrs, lse, mask=row_ok)
    else:
        total_rows = num_seqs * seqlen_q * num_heads_q
        r = (b * seqlen_q + row_tok) * num_heads_q + row_head
        part = split.to(tl.int64) * total_rows + r
        tl.store(O_part + part[:, None] * head_dim + offs_d[None, :], out, mask=row_ok[:, None] & d_ok[None, :])
        tl.store(LSE_part + part, lse, mask=row_ok)
