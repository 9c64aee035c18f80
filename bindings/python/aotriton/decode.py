"""flash_attn_with_kvcache: attention over a contiguous or paged KV cache
(decode and speculative decode), flash-attn's signature and conventions.

Eager calls go straight to the extension; under torch.compile / export / fake
tensors they go through torch.ops.aotriton.attn_decode (_decode_ops.py).
"""
import torch

from . import _decode_ops as O
from ._glue import check_same_device, traced

_INT32 = torch.int32


def _features(q, window_size, softcap, alibi_slopes):
    """(window_left, window_right, softcap, alibi [1 or B, Hq] fp32 or None), checked."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair of ints, got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size values must be >= 0 or -1 (unbounded), got {tuple(window_size)}")
    softcap = float(softcap or 0.0)
    if not softcap >= 0.0 or softcap == float("inf"):
        raise ValueError(f"softcap must be finite and >= 0 (0: off), got {softcap}")
    if alibi_slopes is not None:
        if softcap:
            raise NotImplementedError("aotriton flash_attn_with_kvcache: softcap and alibi_slopes together")
        if alibi_slopes.dtype != torch.float32 or alibi_slopes.dim() not in (1, 2):
            raise ValueError(f"alibi_slopes must be fp32 (Hq,) or (B, Hq), got {alibi_slopes.dtype} "
                             f"{tuple(alibi_slopes.shape)}")
        check_same_device((("q", q), ("alibi_slopes", alibi_slopes)))
        if alibi_slopes.dim() == 1:
            alibi_slopes = alibi_slopes.unsqueeze(0)
        if alibi_slopes.stride(-1) != 1:
            alibi_slopes = alibi_slopes.contiguous()
    return left, right, softcap, alibi_slopes


def _capturing():
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def check_indices(k_cache, cache_seqlens, block_table, seqlen_new):
    """Device-side index check with one host sync: every cache_seqlens value in
    [0, capacity - seqlen_new] and every block-table entry a sequence uses in
    [0, num_blocks). Raises ValueError naming the first offender."""
    if block_table is None:
        capacity = k_cache.shape[1]
    else:
        page = k_cache.shape[1]
        capacity = block_table.shape[1] * page
    cs = cache_seqlens.long()
    bad_len = (cs < 0) | (cs > capacity - seqlen_new)
    checks = [bad_len]
    if block_table is not None:
        used = torch.arange(block_table.shape[1], device=cs.device)[None, :] * page < (cs.clamp(0, capacity - seqlen_new)
                                                                                       + seqlen_new)[:, None]
        bad_page = used & ((block_table < 0) | (block_table >= k_cache.shape[0]))
        checks.append(bad_page.any(1))
    flags = torch.stack(checks).cpu()
    if bool(flags[0].any()):
        b = int(flags[0].nonzero()[0, 0])
        raise ValueError(f"cache_seqlens[{b}] = {int(cache_seqlens[b])} is outside [0, {capacity - seqlen_new}] "
                         f"(capacity {capacity}, {seqlen_new} new tokens): the cache is too small for the append"
                         if seqlen_new else
                         f"cache_seqlens[{b}] = {int(cache_seqlens[b])} is outside [0, {capacity}] (cache capacity)")
    if len(checks) > 1 and bool(flags[1].any()):
        b = int(flags[1].nonzero()[0, 0])
        raise ValueError(f"block_table row {b} has an entry outside [0, {k_cache.shape[0]}) (num_blocks) among the "
                         f"pages its sequence uses: {block_table[b].tolist()}")


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False, *,
                            check_inputs=False, force_config=None):
    """Attention of q over a KV cache, after appending k/v to it in place
    (flash-attn 2's signature; rotary_cos/rotary_sin, cache_batch_idx and
    cache_leftpad are not supported and raise NotImplementedError when given).

    q           [B, Sq, Hq, D] fp16/bf16 (Sq >= 1; Sq > 1 for speculative decoding).
    k_cache, v_cache  [B, capacity, Hk, D], or paged [num_blocks, page_size, Hk, D]
                with block_table int32 [B, max_blocks] (page_size a multiple of 16; a
                multiple of 64 runs the faster per-tile page lookup, docs/performance.md).
    k, v        optional [B, Snew, Hk, D]: written at rows cache_seqlens[b] .. + Snew
                of each sequence (the caches are modified), then attended to.
    cache_seqlens  int or int32 [B] tensor: tokens already in each sequence's cache.
    causal      bottom-right aligned: query i sees keys j <= i + seqlen_k - Sq.
    window_size (left, right): query i sees keys j in [i + seqlen_k - Sq - left,
                i + seqlen_k - Sq + right]; -1 = unbounded (flash-attn's sliding window).
    softcap     > 0: scores s become softcap * tanh(s / softcap).
    alibi_slopes  fp32 (Hq,) or (B, Hq): scores get -slope * |i + seqlen_k - Sq - j|.
    num_splits  0: automatic split-KV; n >= 1 forces n splits (at most 128).
    check_inputs  opt-in (a debugging aid: it costs one host sync per call, so the
                decode loop's default stays sync-free): eager and not capturing a
                CUDA graph, check cache_seqlens and the used block-table entries
                on the device and raise ValueError when out of range. Without the
                check (the default, graph capture, torch.compile) the kernels clamp cache_seqlens into
                [0, capacity - Snew] and leave out keys whose block-table entry is
                outside [0, num_blocks) (never an out-of-bounds access).
    Returns out [B, Sq, Hq, D] (and lse fp32 [B, Hq, Sq] with return_softmax_lse).
    """
    for name, value in (("rotary_cos/rotary_sin (apply rotary embeddings before the call)",
                         rotary_cos if rotary_cos is not None else rotary_sin),
                        ("cache_batch_idx", cache_batch_idx), ("cache_leftpad", cache_leftpad)):
        if value is not None:
            raise NotImplementedError(f"aotriton flash_attn_with_kvcache: {name} is not supported")
    if (k is None) != (v is None):
        raise ValueError("flash_attn_with_kvcache: pass k and v together")
    check_same_device((("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("k", k), ("v", v),
                       ("block_table", block_table)))
    for name, t, rank in (("q", q, 4), ("k_cache", k_cache, 4), ("v_cache", v_cache, 4), ("k", k, 4), ("v", v, 4),
                          ("block_table", block_table, 2)):
        if t is not None and t.dim() != rank:
            raise ValueError(f"{name} must be {rank}-D, got shape {tuple(t.shape)}")
    B, Sq, Hq, D = q.shape
    left, right, softcap, alibi = _features(q, window_size, softcap, alibi_slopes)
    if cache_seqlens is None:
        raise ValueError("flash_attn_with_kvcache: cache_seqlens is required (an int or an int32 [B] tensor)")
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((B,), cache_seqlens, dtype=_INT32, device=q.device)
    elif cache_seqlens.dtype != _INT32:
        raise ValueError(f"cache_seqlens must be int32, got {cache_seqlens.dtype}")
    check_same_device((("q", q), ("cache_seqlens", cache_seqlens)))
    if block_table is not None and block_table.dtype != _INT32:
        raise ValueError(f"block_table must be int32, got {block_table.dtype}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    scale = D ** -0.5 if softmax_scale is None else float(softmax_scale)
    out = torch.empty_like(q)
    lse = q.new_empty((B, Hq, Sq), dtype=torch.float32)
    if traced(q):
        torch.ops.aotriton.attn_decode(out, lse, k_cache, v_cache, q, k, v, cache_seqlens, block_table, alibi, scale,
                                       bool(causal), left, right, softcap, int(num_splits), force_config)
    else:
        if check_inputs and not _capturing():
            check_indices(k_cache, cache_seqlens, block_table, 0 if k is None else k.shape[1])
        O.launch(out, lse, k_cache, v_cache, q, k, v, cache_seqlens, block_table, alibi, scale, bool(causal), left,
                 right, softcap, int(num_splits), force_config)
    return (out, lse) if return_softmax_lse else out
