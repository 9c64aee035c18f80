"""Flash attention as torch custom ops (torch.ops.aotriton.attn_fwd and friends),
with fake implementations and autograd, plus the eager autograd.Function that
skips the dispatcher. Both share one backward (`_grads`).

Every op also takes the keyword features window_left=-1, window_right=-1,
softcap=0.0, alibi_slopes=None ([1 or B, Hq] fp32), checked beforehand by
_flash_features.check_features, and deterministic=False: False lets the
backward sum dQ with fp32 atomics where that is faster (sm_90), True keeps
it bit-reproducible (the forward ops take it only to hand it to autograd).

Ops (every tensor output is freshly allocated; nothing is mutated):
  attn_fwd(q, k, v, philox_seed?, philox_offset?, scale, causal, dropout_p, return_mask, force_config?)
      -> (out, lse, mask)            mask is int8 [0] unless return_mask
  attn_fwd_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, philox_seed?, philox_offset?, max_seqlen_q,
                  max_seqlen_k, scale, causal, dropout_p, return_mask, force_config?) -> (out, lse, mask)
  attn_bwd(dout, q, k, v, out, lse, philox_seed?, philox_offset?, scale, causal, dropout_p, force_config?)
      -> (dq, dk, dv)
  attn_bwd_varlen(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, philox_seed?, philox_offset?,
                  max_seqlen_q, max_seqlen_k, scale, causal, dropout_p, force_config?) -> (dq, dk, dv)
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _flash_launch as L
from ._flash_features import unpack
from ._glue import traced

_lib = torch.library
_Out3 = Tuple[Tensor, Tensor, Tensor]


def _mask_or_empty(q, mask):
    return mask if mask is not None else q.new_empty((0,), dtype=torch.int8)


def _feat(window_left=-1, window_right=-1, softcap=0.0, alibi_slopes=None):
    """The op's feature arguments as a feat tuple, None when all are off."""
    if window_left == -1 and window_right == -1 and not softcap and alibi_slopes is None:
        return None
    return (window_left, window_right, softcap, alibi_slopes)


# --- forward ------------------------------------------------------------------------------------
@_lib.custom_op("aotriton::attn_fwd", mutates_args=())
def attn_fwd(q: Tensor, k: Tensor, v: Tensor, philox_seed: Optional[Tensor], philox_offset: Optional[Tensor],
             scale: float, causal: int, dropout_p: float, return_mask: bool, force_config: Optional[str],
             window_left: int = -1, window_right: int = -1, softcap: float = 0.0,
             alibi_slopes: Optional[Tensor] = None, deterministic: bool = False) -> _Out3:
    out, lse, mask = L.fwd(q, k, v, philox_seed, philox_offset, scale, causal, dropout_p, return_mask, force_config,
                           None, _feat(window_left, window_right, softcap, alibi_slopes))
    return out, lse, _mask_or_empty(q, mask)


@attn_fwd.register_fake
def _(q, k, v, philox_seed, philox_offset, scale, causal, dropout_p, return_mask, force_config, window_left=-1,
      window_right=-1, softcap=0.0, alibi_slopes=None, deterministic=False):
    out, lse, mask = L.fwd_outputs(q, k, return_mask, None, v)
    return out, lse, _mask_or_empty(q, mask)


@_lib.custom_op("aotriton::attn_fwd_varlen", mutates_args=())
def attn_fwd_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                    philox_seed: Optional[Tensor], philox_offset: Optional[Tensor], max_seqlen_q: int,
                    max_seqlen_k: int, scale: float, causal: int, dropout_p: float, return_mask: bool,
                    force_config: Optional[str], window_left: int = -1, window_right: int = -1,
                    softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                    deterministic: bool = False) -> _Out3:
    varlen = (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    out, lse, mask = L.fwd(q, k, v, philox_seed, philox_offset, scale, causal, dropout_p, return_mask, force_config,
                           varlen, _feat(window_left, window_right, softcap, alibi_slopes))
    return out, lse, _mask_or_empty(q, mask)


@attn_fwd_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, philox_seed, philox_offset, max_seqlen_q, max_seqlen_k, scale, causal,
      dropout_p, return_mask, force_config, window_left=-1, window_right=-1, softcap=0.0, alibi_slopes=None,
      deterministic=False):
    out, lse, mask = L.fwd_outputs(q, k, return_mask, (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k), v)
    return out, lse, _mask_or_empty(q, mask)


# --- backward -----------------------------------------------------------------------------------
@_lib.custom_op("aotriton::attn_bwd", mutates_args=())
def attn_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, philox_seed: Optional[Tensor],
             philox_offset: Optional[Tensor], scale: float, causal: int, dropout_p: float,
             force_config: Optional[str], window_left: int = -1, window_right: int = -1, softcap: float = 0.0,
             alibi_slopes: Optional[Tensor] = None, deterministic: bool = False) -> _Out3:
    return L.bwd(dout, q, k, v, out, lse, philox_seed, philox_offset, scale, causal, dropout_p, force_config, None,
                 _feat(window_left, window_right, softcap, alibi_slopes), deterministic)


@attn_bwd.register_fake
def _(dout, q, k, v, out, lse, philox_seed, philox_offset, scale, causal, dropout_p, force_config, window_left=-1,
      window_right=-1, softcap=0.0, alibi_slopes=None, deterministic=False):
    return L.bwd_outputs(q, k, v)


@_lib.custom_op("aotriton::attn_bwd_varlen", mutates_args=())
def attn_bwd_varlen(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cu_seqlens_q: Tensor,
                    cu_seqlens_k: Tensor, philox_seed: Optional[Tensor], philox_offset: Optional[Tensor],
                    max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: int, dropout_p: float,
                    force_config: Optional[str], window_left: int = -1, window_right: int = -1,
                    softcap: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                    deterministic: bool = False) -> _Out3:
    return L.bwd(dout, q, k, v, out, lse, philox_seed, philox_offset, scale, causal, dropout_p, force_config,
                 (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k),
                 _feat(window_left, window_right, softcap, alibi_slopes), deterministic)


@attn_bwd_varlen.register_fake
def _(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, philox_seed, philox_offset, max_seqlen_q, max_seqlen_k,
      scale, causal, dropout_p, force_config, window_left=-1, window_right=-1, softcap=0.0, alibi_slopes=None,
      deterministic=False):
    return L.bwd_outputs(q, k, v)


def backward(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat=None,
             deterministic=False):
    """(dq, dk, dv): eager launch, or the attn_bwd op when traced. torch's
    use_deterministic_algorithms(True) makes every backward deterministic."""
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    if not traced(dout):
        return L.bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat,
                     deterministic)
    if varlen is None:
        return torch.ops.aotriton.attn_bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p,
                                           force_config, *unpack(feat), deterministic)
    cu_q, cu_k, max_q, max_k = varlen
    return torch.ops.aotriton.attn_bwd_varlen(dout, q, k, v, out, lse, cu_q, cu_k, seed, offset, max_q, max_k, scale,
                                              causal, dropout_p, force_config, *unpack(feat), deterministic)


# --- autograd (one backward for the custom ops and the eager Function) ---------------------------
def _save(ctx, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, varlen, feat, deterministic=False):
    cu = varlen[:2] if varlen is not None else (None, None)
    slopes = feat[3] if feat is not None else None
    ctx.save_for_backward(q, k, v, out, lse, seed, offset, *cu, slopes)
    ctx.attrs = (scale, causal, dropout_p, None if varlen is None else varlen[2:],
                 None if feat is None else feat[:3], deterministic)


def _grads(ctx, dout):
    q, k, v, out, lse, seed, offset, cu_q, cu_k, slopes = ctx.saved_tensors
    scale, causal, dropout_p, maxes, window_softcap, deterministic = ctx.attrs
    varlen = None if maxes is None else (cu_q, cu_k) + maxes
    feat = None if window_softcap is None else window_softcap + (slopes,)
    # The forward's force_config names a forward config: the backward uses its own choice.
    return backward(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, None, varlen, feat, deterministic)


_N_FEATURES = 4  # window_left, window_right, softcap, alibi_slopes: no gradient
# The forward ops' inputs after their features: deterministic.


def _setup_fwd(ctx, inputs, output):
    q, k, v, seed, offset, scale, causal, dropout_p, _mask, _cfg = inputs[:10]
    ctx.mark_non_differentiable(output[1], output[2])
    _save(ctx, q, k, v, output[0], output[1], seed, offset, scale, causal, dropout_p, None, _feat(*inputs[10:14]),
          *inputs[14:])


def _backward_fwd(ctx, dout, _dlse, _dmask):
    return _grads(ctx, dout) + (None,) * (7 + _N_FEATURES + 1)


def _setup_fwd_varlen(ctx, inputs, output):
    q, k, v, cu_q, cu_k, seed, offset, max_q, max_k, scale, causal, dropout_p, _mask, _cfg = inputs[:14]
    ctx.mark_non_differentiable(output[1], output[2])
    _save(ctx, q, k, v, output[0], output[1], seed, offset, scale, causal, dropout_p, (cu_q, cu_k, max_q, max_k),
          _feat(*inputs[14:18]), *inputs[18:])


def _backward_fwd_varlen(ctx, dout, _dlse, _dmask):
    return _grads(ctx, dout) + (None,) * (11 + _N_FEATURES + 1)


attn_fwd.register_autograd(_backward_fwd, setup_context=_setup_fwd)
attn_fwd_varlen.register_autograd(_backward_fwd_varlen, setup_context=_setup_fwd_varlen)


class EagerFlashAttn(torch.autograd.Function):
    """The eager differentiable path: same saved state and backward as the ops,
    without the custom-op dispatch."""

    @staticmethod
    def forward(ctx, q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen, feat=None,
                deterministic=False):
        out, lse, mask = L.fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen,
                               feat)
        mask = _mask_or_empty(q, mask)
        ctx.mark_non_differentiable(lse, mask)
        _save(ctx, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, varlen, feat, deterministic)
        return out, lse, mask

    @staticmethod
    def backward(ctx, dout, _dlse, _dmask):
        return _grads(ctx, dout) + (None,) * 10
