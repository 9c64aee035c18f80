"""Flash attention on torch tensors (flash-attn and SDPA conventions)."""
import math

import pyaotriton as _C
import torch

from ._glue import check_cuda, launch_env, view

CAUSAL_NONE, CAUSAL_TOP_LEFT, CAUSAL_BOTTOM_RIGHT = 0, 1, 2
_CAUSAL_NAMES = {"none": 0, "top_left": 1, "bottom_right": 2}


def _causal_code(causal, causal_type):
    if causal_type is not None:
        if causal_type not in _CAUSAL_NAMES:
            raise ValueError(f"causal_type must be one of {sorted(_CAUSAL_NAMES)}, got {causal_type!r}")
        return _CAUSAL_NAMES[causal_type]
    return CAUSAL_BOTTOM_RIGHT if causal else CAUSAL_NONE  # flash-attn's causal is bottom-right aligned


def philox_state(device, seed=None, offset=0, generator=None):
    """(seed, offset) int64 device scalars for dropout. With no seed, one is
    drawn from torch's CPU generator (so torch.manual_seed reproduces it)."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    st = torch.tensor([seed, offset], dtype=torch.int64, device=device)
    return st[0:1], st[1:2]


def _fwd(q, k, v, softmax_scale, causal_code, dropout_p, philox, return_mask, force_config):
    """Batched forward on (B, S, H, D) views. Returns out, lse, philox, mask."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_cuda(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, seqlen, heads, head_dim), got shape {tuple(t.shape)}")
    B, Sq, Hq, D = q.shape
    Sk = k.shape[1]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else float(softmax_scale)
    out = torch.empty_like(q)
    lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device)
    mask = None
    if dropout_p > 0 or return_mask:
        if philox is None:
            philox = philox_state(q.device)
        if return_mask:
            mask = torch.zeros((B, Hq, Sq, Sk), dtype=torch.int8, device=q.device)
    seed_ptr, off_ptr = (philox[0].data_ptr(), philox[1].data_ptr()) if philox is not None else (0, 0)
    stream, guard = launch_env(q)
    with guard:
        _C.attn_fwd(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"), scale,
                    causal_code, float(dropout_p), seed_ptr, off_ptr,
                    view(mask, "dropout_mask") if mask is not None else None, stream, force_config)
    return out, lse, philox, mask


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, *, causal_type=None,
                    return_lse=False, return_dropout_mask=False, philox=None, force_config=None):
    """Attention over (batch, seqlen, heads, head_dim) tensors (flash-attn layout).

    causal=True is bottom-right aligned (flash-attn >= 2.1); causal_type=
    "top_left" / "bottom_right" / "none" chooses explicitly. num_heads of q must
    be a multiple of k/v's (GQA/MQA). Returns out, plus (lse, philox) with
    return_lse and the int8 keep mask with return_dropout_mask.
    """
    out, lse, philox, mask = _fwd(q, k, v, softmax_scale, _causal_code(causal, causal_type), dropout_p, philox,
                                  return_dropout_mask, force_config)
    extra = ()
    if return_lse:
        extra += (lse, philox)
    if return_dropout_mask:
        extra += (mask,)
    return (out,) + extra if extra else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, *, causal_type=None, return_lse=False,
                           return_dropout_mask=False, philox=None, force_config=None):
    """Packed variable-length attention: q (total_q, Hq, D), k/v (total_k, Hk, D),
    cu_seqlens_* int32 CUDA tensors of length num_seqs + 1."""
    for name, t in (("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        check_cuda(t, name)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (total_tokens, heads, head_dim), got shape {tuple(t.shape)}")
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if t.dtype != torch.int32 or t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 1-D int32 tensor")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel() or cu_seqlens_q.numel() < 1:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must both have num_seqs + 1 entries")
    num_seqs = cu_seqlens_q.numel() - 1
    total_q, Hq, D = q.shape
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else float(softmax_scale)
    out = torch.empty_like(q)
    lse = torch.empty((Hq, total_q), dtype=torch.float32, device=q.device)
    mask = None
    if dropout_p > 0 or return_dropout_mask:
        if philox is None:
            philox = philox_state(q.device)
        if return_dropout_mask:
            mask = torch.zeros((num_seqs, Hq, max_seqlen_q, max_seqlen_k), dtype=torch.int8, device=q.device)
    seed_ptr, off_ptr = (philox[0].data_ptr(), philox[1].data_ptr()) if philox is not None else (0, 0)
    stream, guard = launch_env(q)
    with guard:
        _C.attn_fwd_varlen(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"),
                           cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr(), num_seqs, int(max_seqlen_q),
                           int(max_seqlen_k), scale, _causal_code(causal, causal_type), float(dropout_p), seed_ptr,
                           off_ptr, view(mask, "dropout_mask") if mask is not None else None, stream, force_config)
    extra = ()
    if return_lse:
        extra += (lse, philox)
    if return_dropout_mask:
        extra += (mask,)
    return (out,) + extra if extra else out


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch SDPA-shaped call: (batch, heads, seqlen, head_dim) tensors,
    is_causal top-left aligned as in torch. No attn_mask support."""
    if attn_mask is not None:
        raise ValueError("aotriton scaled_dot_product_attention does not take attn_mask (use is_causal)")
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError("query and key head counts differ: pass enable_gqa=True for GQA/MQA")
    out, _, _, _ = _fwd(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale,
                        CAUSAL_TOP_LEFT if is_causal else CAUSAL_NONE, dropout_p, None, False, None)
    return out.transpose(1, 2)
