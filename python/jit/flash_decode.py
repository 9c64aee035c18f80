"""JIT launcher for the decode kernels (kv_append, attn_decode,
attn_decode_combine): CPU interpreter tests and JIT-vs-AOT benchmarks.

Works with CUDA tensors and, under TRITON_INTERPRET=1, with CPU tensors. The
calls (argument order, strides by dim name, grids) come from the rules
(python/rules_flash.py) through python/jit_launch.py, as in the AOT build.
"""
import torch

from python import rules_flash
from python.jit_launch import View, launch, prepare

from tritonsrc.flash.decode_configs import (DECODE_HEAD_BUCKETS, combine_config, decode_head_bucket,  # noqa: F401
                                           default_decode_config, page_tiles)


def _bshd(t, rows="m"):
    """A [B, S, H, D] tensor (q, o, new keys: rows "m") or cache (rows "n")."""
    return View(t, z=0, h=2, **{rows: 1})


def decode_jit(q, k_cache, v_cache, cache_seqlens, *, sm_scale, k=None, v=None, block_table=None, causal=False,
               window_size=(-1, -1), softcap=0.0, alibi_slopes=None, num_splits=1, config=None, out=None,
               lse_out=None):
    """Append k/v (if given) at cache_seqlens, then attend. Returns (out, lse).

    q [B, Sq, Hq, D]; caches [B, cap, Hk, D] or paged [num_blocks, page, Hk, D]
    with block_table int32 [B, max_blocks]; cache_seqlens int32 [B]; lse is
    fp32 [B, Hq, Sq]. window_size (left, right), -1 unbounded; softcap > 0 or
    alibi_slopes fp32 (Hq,) / (B, Hq) pick SCORE_MOD 1 / 2. No argument checks:
    the operators do those.
    """
    B, Sq, Hq, D = q.shape
    paged = block_table is not None
    seqlen_new = 0 if k is None else k.shape[1]
    bucket = decode_head_bucket(D)
    tiles = _page_tiles(k_cache, v_cache, paged)
    cfg = default_decode_config(D, tiles)
    if config:
        cfg.update(config)
    if tiles == 1 and k_cache.shape[1] % cfg["BLOCK_N"]:
        raise ValueError(f"BLOCK_N {cfg['BLOCK_N']} must divide the page size {k_cache.shape[1]} (PAGE_TILES 1)")
    if tiles == 2 and cfg["BLOCK_N"] % k_cache.shape[1]:
        raise ValueError(f"the page size {k_cache.shape[1]} must divide BLOCK_N {cfg['BLOCK_N']} (PAGE_TILES 2)")

    caches = _caches(k_cache, v_cache, cache_seqlens, block_table)
    if seqlen_new:
        launch(rules_flash.kv_append, dict(caches, K_new=_bshd(k), V_new=_bshd(v), seqlen_new=seqlen_new, num_seqs=B),
               dict(BLOCK_DMODEL=bucket, PAGED=paged), dict(BLOCK_M=16, num_warps=4))

    o = torch.empty_like(q) if out is None else out
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device) if lse_out is None else lse_out
    rows = B * Sq * Hq
    if num_splits > 1:
        o_part = torch.empty((num_splits, rows, D), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((num_splits, rows), dtype=torch.float32, device=q.device)
    else:
        o_part = lse_part = lse
    launch(*_decode_call(caches, q, o, lse, o_part, lse_part, sm_scale, seqlen_new, num_splits, causal,
                         window_size, softcap, alibi_slopes, cfg))
    if num_splits > 1:
        launch(rules_flash.attn_decode_combine, dict(
            O=_bshd(o), LSE=View(lse, z=0, h=1), O_part=o_part, LSE_part=lse_part, seqlen_q=Sq, num_heads_q=Hq,
            head_dim=D, total_rows=rows, num_splits=num_splits,
        ), dict(BLOCK_DMODEL=bucket), combine_config(D))
    return o, lse


def _page_tiles(k_cache, v_cache, paged):
    """The PAGE_TILES functional of these caches (flash_decode.cc decides the same)."""
    return page_tiles(k_cache.shape[1], max(k_cache.stride(1), v_cache.stride(1))) if paged else 0


def _caches(k_cache, v_cache, cache_seqlens, block_table):
    """The cache arguments kv_append and attn_decode share."""
    paged = block_table is not None
    page = k_cache.shape[1]
    return dict(K=_bshd(k_cache, "n"), V=_bshd(v_cache, "n"), cache_seqlens=cache_seqlens,
                block_table=View(block_table if paged else cache_seqlens, bt=0 if paged else None),
                num_heads_k=k_cache.shape[2], head_dim=k_cache.shape[3],
                capacity=block_table.shape[1] * page if paged else k_cache.shape[1], page_size=page,
                num_blocks=k_cache.shape[0] if paged else 0)


def _decode_call(caches, q, o, lse, o_part, lse_part, sm_scale, seqlen_new, num_splits, causal, window_size,
                 softcap, alibi_slopes, cfg):
    """(rule, values, functional, config) of one attn_decode launch."""
    B, Sq, Hq, D = q.shape
    alibi = View(alibi_slopes if alibi_slopes is not None else lse,
                 z=0 if alibi_slopes is not None and alibi_slopes.dim() == 2 else None)
    values = dict(
        caches, Q=_bshd(q), O=_bshd(o), LSE=View(lse, z=0, h=1), O_part=o_part, LSE_part=lse_part,
        sm_scale=float(sm_scale), seqlen_q=Sq, seqlen_new=seqlen_new, num_seqs=B, num_heads_q=Hq,
        num_splits=num_splits, causal=int(bool(causal)), window_left=int(window_size[0]),
        window_right=int(window_size[1]), softcap=float(softcap) if softcap else 1.0, alibi_slopes=alibi,
        keys_per_split=-(-caches["capacity"] // num_splits),
    )
    paged = caches["block_table"].dims["bt"] is not None
    functional = dict(BLOCK_DMODEL=decode_head_bucket(D), PAGED=paged,
                      SCORE_MOD=(1 if softcap else 2 if alibi_slopes is not None else 0),
                      PAGE_TILES=_page_tiles(caches["K"].tensor, caches["V"].tensor, paged))
    return rules_flash.attn_decode, values, functional, {n: cfg[n] for n in ("BLOCK_M", "BLOCK_N", "num_warps",
                                                                             "num_stages", "maxnreg") if n in cfg}


def decode_launch_args(q, k_cache, v_cache, cache_seqlens, *, sm_scale, block_table=None, num_splits=1, config=None):
    """(grid, args, kwargs) of the attn_decode launch decode_jit makes for these
    inputs (no append, no window or score modifier), with fresh outputs: the
    tuner compiles configs ahead with attn_decode.warmup(*args, grid=grid, **kwargs)."""
    B, Sq, Hq, D = q.shape
    cfg = default_decode_config(D, _page_tiles(k_cache, v_cache, block_table is not None))
    cfg.update(config or {})
    o = torch.empty_like(q)
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device)
    rows = B * Sq * Hq
    o_part = torch.empty((max(num_splits, 1), rows, D), dtype=torch.float32, device=q.device)
    lse_part = torch.empty((max(num_splits, 1), rows), dtype=torch.float32, device=q.device)
    return prepare(*_decode_call(_caches(k_cache, v_cache, cache_seqlens, block_table), q, o, lse, o_part, lse_part,
                                 sm_scale, 0, num_splits, False, (-1, -1), 0.0, None, cfg))
