"""Writes new keys and values into a KV cache in place (before attn_decode).

Token t of sequence b goes to cache row cached_length(b) + t (kv_cache.py:
the cached length is clamped so the row is always inside the cache). In a
paged cache, a token whose block-table entry is outside [0, num_blocks) is
not written (decode leaves that key out too).

Constexprs: FUNCTIONAL dtype (fp16, bf16), BLOCK_DMODEL (64, 128, 256), PAGED.
TUNING: BLOCK_M (tokens per program), num_warps.
Grid: (cdiv(seqlen_new, BLOCK_M), num_seqs * num_heads_k, 1).
"""
import triton
import triton.language as tl

from ..pdl import let_successor_start_then_wait
from .kv_cache import cached_length, sequence_caches, slot_offsets, token_slots


@triton.jit(do_not_specialize=["seqlen_new", "num_heads_k", "head_dim", "capacity", "num_blocks"])
def kv_append(
    K_new, V_new, K, V, cache_seqlens, block_table,
    stride_knz, stride_knm, stride_knh,
    stride_vnz, stride_vnm, stride_vnh,
    stride_kz, stride_kn, stride_kh,
    stride_vz, stride_vn, stride_vh,
    stride_bt,
    seqlen_new, num_heads_k, head_dim, capacity, page_size, num_blocks,
    BLOCK_DMODEL: tl.constexpr, PAGED: tl.constexpr, BLOCK_M: tl.constexpr, USE_PDL: tl.constexpr = False,
):
    """K_new, V_new [B, seqlen_new, Hk, D]; K, V the cache (see decode.py)."""
    # attn_decode follows: its programs may start at once and hint L2 for the cached rows
    # (tritonsrc/flash/kv_prefetch.py) while this one waits and writes.
    let_successor_start_then_wait(USE_PDL)
    bh = tl.program_id(1)
    b = bh // num_heads_k
    hk = bh % num_heads_k
    toks = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    tok_ok = toks < seqlen_new
    offs_d = tl.arange(0, BLOCK_DMODEL)
    d_ok = offs_d < (head_dim // 8) * 8
    cols = cached_length(cache_seqlens, b, seqlen_new, capacity) + toks

    table_row, k_head, v_head = sequence_caches(K, V, block_table, b, hk, stride_bt, stride_kz, stride_kh, stride_vz,
                                                stride_vh, PAGED)
    blk, row, ok = token_slots(table_row, cols, page_size, num_blocks, tok_ok, PAGED)
    k_rows = slot_offsets(blk, row, stride_kz, stride_kn, PAGED)
    v_rows = slot_offsets(blk, row, stride_vz, stride_vn, PAGED)

    src_k = K_new + b.to(tl.int64) * stride_knz + hk * stride_knh + toks[:, None] * stride_knm + offs_d[None, :]
    src_v = V_new + b.to(tl.int64) * stride_vnz + hk * stride_vnh + toks[:, None] * stride_vnm + offs_d[None, :]
    k = tl.load(src_k, mask=tok_ok[:, None] & d_ok[None, :])
    v = tl.load(src_v, mask=tok_ok[:, None] & d_ok[None, :])
    tl.store(k_head + k_rows[:, None] + offs_d[None, :], k, mask=ok[:, None] & d_ok[None, :])
    tl.store(v_head + v_rows[:, None] + offs_d[None, :], v, mask=ok[:, None] & d_ok[None, :])
