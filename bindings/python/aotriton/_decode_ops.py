"""KV-cache attention: the eager launch into pyaotriton and the torch custom op
torch.ops.aotriton.attn_decode with its fake implementation.

  attn_decode(out!, lse!, k_cache!, v_cache!, q, k_new?, v_new?, cache_seqlens, block_table?, alibi_slopes?,
              scale, causal, window_left, window_right, softcap, num_splits, force_config?) -> None

The caches are declared mutated: with k_new/v_new the call writes them in
place (flash-attn's convention). The split-KV workspace is allocated here from
the size the C++ query returns (torch's caching allocator: graph capture safe).
"""
from typing import Optional

import pyaotriton as _C
import torch
from torch import Tensor

from ._glue import _DTYPES, eager_stream, opt_view, view

_lib = torch.library
_UINT8 = torch.uint8
_FP32_CODE = _DTYPES[torch.float32]
_SMS = {}


def num_sms(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def _views(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale, causal,
           window_left, window_right, softcap, num_splits, sms):
    return (view(q, "q"), view(k_cache, "k_cache"), view(v_cache, "v_cache"), opt_view(k_new, "k"),
            opt_view(v_new, "v"), view(cache_seqlens, "cache_seqlens"), opt_view(block_table, "block_table"),
            view(out, "out"), (lse.data_ptr(), lse.shape, lse.stride(), _FP32_CODE), scale, causal, window_left,
            window_right, softcap, opt_view(alibi_slopes, "alibi_slopes"), num_splits, sms)


def workspace_plan(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale,
                   causal, window_left, window_right, softcap, num_splits, sms):
    """(workspace bytes, number of splits) for this call (checks every argument)."""
    return _C.attn_decode_workspace_size(*_views(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens,
                                                 block_table, alibi_slopes, scale, causal, window_left, window_right,
                                                 softcap, num_splits, sms))


def launch(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale, causal,
           window_left, window_right, softcap, num_splits, force_config):
    """Eager: append (if k_new), attend, write out and lse. Returns the config name that ran.
    alibi_slopes: None or fp32 [1, Hq] / [B, Hq]."""
    stream = eager_stream(q)
    if stream is None:
        with torch.cuda.device(q.get_device()):
            return launch(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes,
                          scale, causal, window_left, window_right, softcap, num_splits, force_config)
    args = _views(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale,
                  causal, window_left, window_right, softcap, num_splits, num_sms(q.device))
    nbytes, _ = _C.attn_decode_workspace_size(*args)
    ws = torch.empty(nbytes, dtype=_UINT8, device=q.device) if nbytes else None
    return _C.attn_decode(*args, ws.data_ptr() if ws is not None else 0, nbytes, stream, force_config)


@_lib.custom_op("aotriton::attn_decode", mutates_args=("out", "lse", "k_cache", "v_cache"))
def attn_decode(out: Tensor, lse: Tensor, k_cache: Tensor, v_cache: Tensor, q: Tensor, k_new: Optional[Tensor],
                v_new: Optional[Tensor], cache_seqlens: Tensor, block_table: Optional[Tensor],
                alibi_slopes: Optional[Tensor], scale: float, causal: bool, window_left: int, window_right: int,
                softcap: float, num_splits: int, force_config: Optional[str]) -> None:
    launch(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale, causal,
           window_left, window_right, softcap, num_splits, force_config)


@attn_decode.register_fake
def _(out, lse, k_cache, v_cache, q, k_new, v_new, cache_seqlens, block_table, alibi_slopes, scale, causal,
      window_left, window_right, softcap, num_splits, force_config):
    if tuple(out.shape) != tuple(q.shape):
        raise ValueError(f"out must have q's shape {tuple(q.shape)}, got {tuple(out.shape)}")
    B, Sq, Hq, _ = q.shape
    if tuple(lse.shape) != (B, Hq, Sq):
        raise ValueError(f"lse must have shape {(B, Hq, Sq)}, got {tuple(lse.shape)}")
