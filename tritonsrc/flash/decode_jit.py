"""JIT launcher for the decode kernels (kv_append, attn_decode,
attn_decode_combine): CPU interpreter tests and JIT-vs-AOT benchmarks.

Works with CUDA tensors and, under TRITON_INTERPRET=1, with CPU tensors.
"""
import torch
import triton

from .decode import attn_decode
from .decode_combine import attn_decode_combine
from .decode_configs import DECODE_HEAD_BUCKETS, combine_config, decode_head_bucket, default_decode_config  # noqa: F401
from .kv_append import kv_append


def _bhsd(t):
    """(z, m, h) strides of a [B, S, H, D] tensor."""
    return t.stride(0), t.stride(1), t.stride(2)


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
    Hk = k_cache.shape[2]
    paged = block_table is not None
    page = k_cache.shape[1]
    capacity = block_table.shape[1] * page if paged else k_cache.shape[1]
    num_blocks = k_cache.shape[0] if paged else 0
    bt = block_table if paged else cache_seqlens
    stride_bt = block_table.stride(0) if paged else 0
    seqlen_new = 0 if k is None else k.shape[1]
    bucket = decode_head_bucket(D)
    cfg = default_decode_config(D)
    if config:
        cfg.update(config)

    if seqlen_new:
        bm = 16
        kv_append[(triton.cdiv(seqlen_new, bm), B * Hk, 1)](
            k, v, k_cache, v_cache, cache_seqlens, bt, *_bhsd(k), *_bhsd(v), *_bhsd(k_cache), *_bhsd(v_cache),
            stride_bt, seqlen_new, Hk, D, capacity, page, num_blocks,
            BLOCK_DMODEL=bucket, PAGED=paged, BLOCK_M=bm, num_warps=4)

    o = torch.empty_like(q) if out is None else out
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device) if lse_out is None else lse_out
    rows = B * Sq * Hq
    if num_splits > 1:
        o_part = torch.empty((num_splits, rows, D), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((num_splits, rows), dtype=torch.float32, device=q.device)
    else:
        o_part = lse_part = lse
    grid, args, kwargs = _decode_launch(q, k_cache, v_cache, o, lse, o_part, lse_part, cache_seqlens, bt, paged,
                                        sm_scale, stride_bt, seqlen_new, capacity, num_blocks, num_splits, causal,
                                        window_size, softcap, alibi_slopes, cfg)
    attn_decode[grid](*args, **kwargs)
    if num_splits > 1:
        attn_decode_combine[(rows, 1, 1)](
            o, lse, o_part, lse_part, *_bhsd(o), lse.stride(0), lse.stride(1), Sq, Hq, D, rows, num_splits,
            BLOCK_DMODEL=bucket, BLOCK_S=combine_config(D)["BLOCK_S"], num_warps=4)
    return o, lse


def _decode_launch(q, k_cache, v_cache, o, lse, o_part, lse_part, cache_seqlens, bt, paged, sm_scale, stride_bt,
                   seqlen_new, capacity, num_blocks, num_splits, causal, window_size, softcap, alibi_slopes, cfg):
    """(grid, args, kwargs) of one attn_decode launch: the tuner compiles
    configs ahead with attn_decode.warmup(*args, grid=grid, **kwargs)."""
    B, Sq, Hq, D = q.shape
    Hk, page = k_cache.shape[2], k_cache.shape[1]
    grid = (num_splits, B * Hk, triton.cdiv(Sq * (Hq // Hk), cfg["BLOCK_M"]))
    args = [q, k_cache, v_cache, o, lse, o_part, lse_part, cache_seqlens, bt, float(sm_scale),
            *_bhsd(q), *_bhsd(k_cache), *_bhsd(v_cache), *_bhsd(o), lse.stride(0), lse.stride(1), stride_bt,
            Sq, seqlen_new, B, Hq, Hk, D, capacity, page, num_blocks, num_splits, int(bool(causal)),
            int(window_size[0]), int(window_size[1]), float(softcap) if softcap else 1.0,
            alibi_slopes if alibi_slopes is not None else lse,
            (alibi_slopes.stride(0) if alibi_slopes is not None and alibi_slopes.dim() == 2 else 0)]
    kwargs = dict(BLOCK_DMODEL=decode_head_bucket(D), PAGED=paged,
                  SCORE_MOD=(1 if softcap else 2 if alibi_slopes is not None else 0),
                  BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], num_warps=cfg["num_warps"],
                  num_stages=cfg["num_stages"])
    return grid, args, kwargs


def decode_launch_args(q, k_cache, v_cache, cache_seqlens, *, sm_scale, block_table=None, num_splits=1, config=None):
    """(grid, args, kwargs) of the attn_decode launch decode_jit makes for these
    inputs (no append, no window or score modifier), with fresh outputs."""
    B, Sq, Hq, D = q.shape
    paged = block_table is not None
    cfg = default_decode_config(D)
    cfg.update(config or {})
    o = torch.empty_like(q)
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device)
    rows = B * Sq * Hq
    o_part = torch.empty((max(num_splits, 1), rows, D), dtype=torch.float32, device=q.device)
    lse_part = torch.empty((max(num_splits, 1), rows), dtype=torch.float32, device=q.device)
    capacity = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[1]
    return _decode_launch(q, k_cache, v_cache, o, lse, o_part, lse_part, cache_seqlens,
                          block_table if paged else cache_seqlens, paged, sm_scale,
                          block_table.stride(0) if paged else 0, 0, capacity, k_cache.shape[0] if paged else 0,
                          num_splits, False, (-1, -1), 0.0, None, cfg)
