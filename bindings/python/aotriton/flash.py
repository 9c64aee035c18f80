"""Flash attention on torch tensors (flash-attn and SDPA conventions), with autograd."""
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


def _philox_ptrs(philox):
    return (philox[0].data_ptr(), philox[1].data_ptr()) if philox is not None else (0, 0)


def _check_qkv(q, k, v, rank, what):
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_cuda(t, name)
        if t.dim() != rank:
            raise ValueError(f"{name} must be {rank}-D {what}, got shape {tuple(t.shape)}")


class _Varlen:
    """cu_seqlens and max lengths of a packed batch."""

    def __init__(self, cu_q, cu_k, max_q, max_k):
        for name, t in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
            check_cuda(t, name)
            if t.dtype != torch.int32 or t.dim() != 1 or not t.is_contiguous():
                raise ValueError(f"{name} must be a contiguous 1-D int32 tensor")
        if cu_q.numel() != cu_k.numel() or cu_q.numel() < 1:
            raise ValueError("cu_seqlens_q and cu_seqlens_k must both have num_seqs + 1 entries")
        self.cu_q, self.cu_k = cu_q, cu_k
        self.num_seqs = cu_q.numel() - 1
        self.max_q, self.max_k = int(max_q), int(max_k)


def _fwd(q, k, v, scale, causal_code, dropout_p, philox, return_mask, force_config, varlen=None):
    """Forward on (B, S, H, D) views, or packed (T, H, D) with varlen. Returns out, lse, philox, mask."""
    out = torch.empty_like(q)
    if varlen is None:
        B, Sq, Hq, _ = q.shape
        lse = torch.empty((B, Hq, Sq), dtype=torch.float32, device=q.device)
        mask_shape = (B, Hq, Sq, k.shape[1])
    else:
        lse = torch.empty((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
        mask_shape = (varlen.num_seqs, q.shape[1], varlen.max_q, varlen.max_k)
    mask = None
    if dropout_p > 0 or return_mask:
        if philox is None:
            philox = philox_state(q.device)
        if return_mask:
            mask = torch.zeros(mask_shape, dtype=torch.int8, device=q.device)
    seed_ptr, off_ptr = _philox_ptrs(philox)
    mask_view = view(mask, "dropout_mask") if mask is not None else None
    stream, guard = launch_env(q)
    with guard:
        if varlen is None:
            _C.attn_fwd(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"), scale,
                        causal_code, float(dropout_p), seed_ptr, off_ptr, mask_view, stream, force_config)
        else:
            _C.attn_fwd_varlen(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"),
                               varlen.cu_q.data_ptr(), varlen.cu_k.data_ptr(), varlen.num_seqs, varlen.max_q,
                               varlen.max_k, scale, causal_code, float(dropout_p), seed_ptr, off_ptr, mask_view,
                               stream, force_config)
    return out, lse, philox, mask


def _bwd(dout, q, k, v, out, lse, scale, causal_code, dropout_p, philox, force_config=None, varlen=None):
    """dq, dk, dv (each the dtype and shape of q, k, v)."""
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty_like(lse)
    seed_ptr, off_ptr = _philox_ptrs(philox if dropout_p > 0 else None)
    stream, guard = launch_env(q)
    args = [view(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout"), (lse, "lse"),
                                    (dq, "dq"), (dk, "dk"), (dv, "dv"), (delta, "delta"))]
    with guard:
        if varlen is None:
            _C.attn_bwd(*args, scale, causal_code, float(dropout_p), seed_ptr, off_ptr, stream, force_config)
        else:
            _C.attn_bwd_varlen(*args, varlen.cu_q.data_ptr(), varlen.cu_k.data_ptr(), varlen.num_seqs, varlen.max_q,
                               varlen.max_k, scale, causal_code, float(dropout_p), seed_ptr, off_ptr, stream,
                               force_config)
    return dq, dk, dv


class _FlashAttn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal_code, dropout_p, philox, varlen):
        out, lse, philox, _ = _fwd(q, k, v, scale, causal_code, dropout_p, philox, False, None, varlen)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (scale, causal_code, dropout_p, philox, varlen)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        scale, causal_code, dropout_p, philox, varlen = ctx.args
        dq, dk, dv = _bwd(dout, q, k, v, out, lse, scale, causal_code, dropout_p, philox, varlen=varlen)
        return dq, dk, dv, None, None, None, None, None


def _run(q, k, v, dropout_p, softmax_scale, causal_code, return_lse, return_dropout_mask, philox, force_config,
         varlen):
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    if dropout_p > 0 and philox is None:
        philox = philox_state(q.device)  # drawn once: the backward reuses it
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if grad and not return_dropout_mask and force_config is None:
        out, lse = _FlashAttn.apply(q, k, v, scale, causal_code, float(dropout_p), philox, varlen)
        mask = None
    else:
        out, lse, philox, mask = _fwd(q, k, v, scale, causal_code, dropout_p, philox, return_dropout_mask,
                                      force_config, varlen)
    extra = ()
    if return_lse:
        extra += (lse, philox)
    if return_dropout_mask:
        extra += (mask,)
    return (out,) + extra if extra else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, *, causal_type=None,
                    return_lse=False, return_dropout_mask=False, philox=None, force_config=None):
    """Attention over (batch, seqlen, heads, head_dim) tensors (flash-attn layout), differentiable.

    causal=True is bottom-right aligned (flash-attn >= 2.1); causal_type=
    "top_left" / "bottom_right" / "none" chooses explicitly. num_heads of q must
    be a multiple of k/v's (GQA/MQA). Returns out, plus (lse, philox) with
    return_lse and the int8 keep mask with return_dropout_mask (not differentiable).
    philox: (seed, offset) int64 device tensors from philox_state(); drawn if None.
    """
    _check_qkv(q, k, v, 4, "(batch, seqlen, heads, head_dim)")
    return _run(q, k, v, dropout_p, softmax_scale, _causal_code(causal, causal_type), return_lse,
                return_dropout_mask, philox, force_config, None)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, *, causal_type=None, return_lse=False,
                           return_dropout_mask=False, philox=None, force_config=None):
    """Packed variable-length attention, differentiable: q (total_q, Hq, D),
    k/v (total_k, Hk, D), cu_seqlens_* int32 CUDA tensors of length num_seqs + 1."""
    _check_qkv(q, k, v, 3, "(total_tokens, heads, head_dim)")
    varlen = _Varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return _run(q, k, v, dropout_p, softmax_scale, _causal_code(causal, causal_type), return_lse,
                return_dropout_mask, philox, force_config, varlen)


def flash_attn_backward(dout, q, k, v, out, lse, dropout_p=0.0, softmax_scale=None, causal=False, *,
                        causal_type=None, philox=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                        max_seqlen_k=None, force_config=None):
    """Standalone backward: (dq, dk, dv) from the forward's out and lse (and
    the same philox state when dropout_p > 0). Deterministic (no atomics)."""
    rank = 4 if cu_seqlens_q is None else 3
    _check_qkv(q, k, v, rank, "tensors")
    if dropout_p > 0 and philox is None:
        raise ValueError("dropout backward needs the forward's philox state")
    varlen = None if cu_seqlens_q is None else _Varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    return _bwd(dout, q, k, v, out, lse, scale, _causal_code(causal, causal_type), dropout_p, philox, force_config,
                varlen)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch SDPA-shaped call: (batch, heads, seqlen, head_dim) tensors,
    is_causal top-left aligned as in torch, differentiable. No attn_mask."""
    if attn_mask is not None:
        raise ValueError("aotriton scaled_dot_product_attention does not take attn_mask (use is_causal)")
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError("query and key head counts differ: pass enable_gqa=True for GQA/MQA")
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    _check_qkv(q, k, v, 4, "(batch, heads, seqlen, head_dim)")
    out = _run(q, k, v, dropout_p, scale, CAUSAL_TOP_LEFT if is_causal else CAUSAL_NONE, False, False, None, None,
               None)
    return out.transpose(1, 2)
