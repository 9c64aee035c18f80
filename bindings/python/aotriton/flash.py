"""Flash attention on torch tensors with the flash-attn 2 and SDPA signatures, differentiable.

Eager calls go straight to the extension (an autograd.Function when a grad is
needed); under torch.compile / torch.export / fake tensors they go through the
torch.ops.aotriton custom ops (see _flash_ops.py), which carry fake
implementations and autograd.
"""
import torch

from . import _flash_launch as L
from ._flash_features import check_features, unpack
from ._flash_ops import EagerFlashAttn, backward
from . import _torch_fast
from ._glue import _is_compiling, check_rank, check_same_device, traced

CAUSAL_NONE, CAUSAL_TOP_LEFT, CAUSAL_BOTTOM_RIGHT = 0, 1, 2
_CAUSAL_NAMES = {"none": 0, "top_left": 1, "bottom_right": 2}
_NO_WINDOW = (-1, -1)
_grad_enabled = torch.is_grad_enabled
_INT64, _INT32 = torch.int64, torch.int32


def _causal_code(causal, causal_type):
    if causal_type is None:
        return CAUSAL_BOTTOM_RIGHT if causal else CAUSAL_NONE  # flash-attn's causal is bottom-right aligned
    if causal_type not in _CAUSAL_NAMES:
        raise ValueError(f"causal_type must be one of {sorted(_CAUSAL_NAMES)}, got {causal_type!r}")
    return _CAUSAL_NAMES[causal_type]


def philox_state(device, seed=None, offset=0, generator=None):
    """(seed, offset) int64 device tensors of one element for dropout.

    With no seed and no generator the seed is drawn on the device from torch's
    CUDA generator (torch.manual_seed reproduces it; works inside CUDA graph
    capture, where each replay draws anew). With a CPU `generator` it is drawn
    there. Reusing one state reproduces the same dropout mask."""
    device = torch.device(device)
    if seed is None and generator is None:
        return (torch.randint(0, 2**62, (1,), dtype=_INT64, device=device),
                torch.full((1,), int(offset), dtype=_INT64, device=device))
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    st = torch.tensor([seed, offset], dtype=_INT64, device=device)
    return st[0:1], st[1:2]


def _unsupported(block_table=None):
    """NotImplementedError for flash-attn 2 features the kernels do not have (yet)."""
    if block_table is not None:
        raise NotImplementedError("aotriton flash attention: paged KV cache (block_table) is not supported")


def _check_qkv(q, k, v, rank, what, names=("q", "k", "v")):
    """One device, a CUDA one, and the rank; the slow checks only name the culprit."""
    try:
        d = q.get_device()
        ok = d >= 0 and k.get_device() == d and v.get_device() == d and q.dim() == k.dim() == v.dim() == rank
    except AttributeError:
        ok = False
    if not ok:
        check_same_device(zip(names, (q, k, v)))
        for name, t in zip(names, (q, k, v)):
            check_rank(t, rank, name, what)


def _check_philox(philox, q):
    if not isinstance(philox, (tuple, list)) or len(philox) != 2:
        raise ValueError("philox must be a (seed, offset) pair of int64 CUDA tensors (see aotriton.philox_state)")
    for name, t in (("philox seed", philox[0]), ("philox offset", philox[1])):
        if not isinstance(t, torch.Tensor) or t.dtype != _INT64 or t.numel() < 1:
            got = f"{t.dtype} tensor of {t.numel()} elements" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be an int64 CUDA tensor with at least one element, got {got}")
    check_same_device((("q", q), ("philox seed", philox[0]), ("philox offset", philox[1])))
    return philox


def _check_varlen(cu_q, cu_k):
    for name, t in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        if not isinstance(t, torch.Tensor) or t.dtype != _INT32 or t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 1-D int32 tensor")
    if cu_q.shape[0] != cu_k.shape[0] or cu_q.shape[0] < 1:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must both have num_seqs + 1 entries")


def _forward(q, k, v, philox, scale, causal, dropout_p, return_mask, force_config, varlen, feat=None,
             deterministic=False):
    """(out, lse, philox, mask or None): eager launch, eager autograd.Function or the custom op.
    feat: None or check_features' tuple (window, softcap, ALiBi). deterministic:
    for the backward (False: dQ by atomics where faster)."""
    seed = offset = None
    if dropout_p > 0 or return_mask:
        if philox is None:
            philox = philox_state(q.device)  # drawn once: the backward reuses it
        seed, offset = philox
    if traced(q):
        if varlen is None:
            out, lse, mask = torch.ops.aotriton.attn_fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask,
                                                         force_config, *unpack(feat), bool(deterministic))
        else:
            cu_q, cu_k, max_q, max_k = varlen
            out, lse, mask = torch.ops.aotriton.attn_fwd_varlen(q, k, v, cu_q, cu_k, seed, offset, max_q, max_k,
                                                                scale, causal, dropout_p, return_mask, force_config,
                                                                *unpack(feat), bool(deterministic))
    elif _grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out, lse, mask = EagerFlashAttn.apply(q, k, v, seed, offset, scale, causal, dropout_p, return_mask,
                                              force_config, varlen, feat, bool(deterministic))
    else:
        out, lse, mask = L.fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen,
                               feat)
    return out, lse, philox, (mask if return_mask else None)


def _run(q, k, v, dropout_p, softmax_scale, causal_code, return_attn_probs, return_lse, return_dropout_mask, philox,
         force_config, varlen, feat=None, deterministic=False):
    if philox is not None:
        philox = _check_philox(philox, q)
    if return_attn_probs and (return_lse or return_dropout_mask):
        raise ValueError("return_attn_probs (flash-attn's) cannot be combined with return_lse / return_dropout_mask")
    dropout_p = float(dropout_p)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
    return_mask = return_dropout_mask or (return_attn_probs and dropout_p > 0)
    out, lse, philox, mask = _forward(q, k, v, philox, scale, causal_code, dropout_p, return_mask, force_config,
                                      varlen, feat, deterministic)
    if return_attn_probs:
        return out, lse, mask  # mask: int8 keep mask (1 = kept), None without dropout
    if return_lse:
        return (out, lse, philox, mask) if return_dropout_mask else (out, lse, philox)
    return (out, mask) if return_dropout_mask else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=_NO_WINDOW, softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False, *, causal_type=None,
                    return_lse=False, return_dropout_mask=False, philox=None, force_config=None):
    """flash-attn 2's flash_attn_func over (batch, seqlen, heads, head_dim) tensors, differentiable.

    Every flash-attn 2 argument works as in flash-attn: window_size (left,
    right) with -1 = unbounded (with causal, right is 0; the window follows
    the causal alignment, else bottom-right), softcap > 0, alibi_slopes fp32
    (nheads,) or (batch, nheads); these need fp16/bf16 and no dropout, and
    softcap excludes alibi_slopes (ValueError otherwise).
    deterministic: as in flash-attn: False (the default) lets the backward
    sum dQ with fp32 atomics where that is faster (sm_90, fp16/bf16, head dim
    64 or 128, no dropout or window/softcap/ALiBi), so dq's last bits may
    differ run to run; True (or torch.use_deterministic_algorithms(True))
    gives bit-reproducible gradients everywhere. return_attn_probs returns
    (out, softmax_lse [B, H, Sq] fp32, S_dmask) where S_dmask is the int8 dropout
    keep mask [B, H, Sq, Sk] (1 = kept) when dropout_p > 0, else None (flash-attn
    returns its debug softmax there; out stays differentiable).

    aotriton extras (keyword-only): causal_type "top_left" / "bottom_right" /
    "none" (causal=True is bottom-right, as flash-attn >= 2.1); return_lse adds
    (lse, philox); return_dropout_mask adds the int8 keep mask; philox: (seed,
    offset) int64 device tensors from philox_state(), drawn if None;
    force_config: run this forward tuning config (the gradient still flows).
    num_heads of q must be a multiple of k/v's (GQA/MQA). v may have another
    head dim than q/k (DeepSeek MLA: 192/128; the supported pairs are in
    docs/pytorch.md, others raise ValueError): out and dv take v's.
    """
    fast = _torch_fast.attn_fwd_plain
    if (fast is not None and causal_type is None and not (
            dropout_p or return_attn_probs or return_lse or return_dropout_mask or softcap)
            and philox is None and force_config is None and alibi_slopes is None
            and window_size == _NO_WINDOW and not _is_compiling()):
        # The common eager inference call in C++ (bindings/torch_ext); NotImplemented
        # (grads, subclasses, dispatch modes, bad input) continues below.
        out = fast(q, k, v, softmax_scale, CAUSAL_BOTTOM_RIGHT if causal else CAUSAL_NONE)
        if out is not NotImplemented:
            return out
    _check_qkv(q, k, v, 4, "(batch, seqlen, heads, head_dim)")
    if causal_type is None:
        causal_code = CAUSAL_BOTTOM_RIGHT if causal else CAUSAL_NONE
    else:
        causal_code = _causal_code(causal, causal_type)
    feat = None
    if window_size is not _NO_WINDOW or softcap or alibi_slopes is not None:
        feat = check_features(window_size, softcap, alibi_slopes, q, q.shape[0], q.shape[2], float(dropout_p))
    if dropout_p or return_attn_probs or return_lse or return_dropout_mask or philox is not None or feat:
        return _run(q, k, v, dropout_p, softmax_scale, causal_code, return_attn_probs, return_lse,
                    return_dropout_mask, philox, force_config, None, feat, deterministic)
    if traced(q) or (_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
        return _forward(q, k, v, None, scale, causal_code, 0.0, False, force_config, None, None, deterministic)[0]
    return L.fwd_plain(q, k, v, softmax_scale, causal_code, force_config)  # the common eager call


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=_NO_WINDOW, softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None, *, causal_type=None,
                           return_lse=False, return_dropout_mask=False, philox=None, force_config=None):
    """flash-attn 2's flash_attn_varlen_func: packed q (total_q, Hq, D), k/v (total_k, Hk, D),
    cu_seqlens_* int32 CUDA tensors of num_seqs + 1 entries, differentiable.

    Arguments and returns as flash_attn_func (softmax_lse is [Hq, total_q],
    S_dmask [num_seqs, Hq, max_seqlen_q, max_seqlen_k]); block_table (paged KV)
    raises NotImplementedError.
    """
    _unsupported(block_table)
    _check_qkv(q, k, v, 3, "(total_tokens, heads, head_dim)")
    check_same_device((("q", q), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)))
    _check_varlen(cu_seqlens_q, cu_seqlens_k)
    varlen = (cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k))
    feat = check_features(window_size, softcap, alibi_slopes, q, cu_seqlens_q.shape[0] - 1, q.shape[1],
                          float(dropout_p))
    return _run(q, k, v, dropout_p, softmax_scale, _causal_code(causal, causal_type), return_attn_probs, return_lse,
                return_dropout_mask, philox, force_config, varlen, feat, deterministic)


def flash_attn_backward(dout, q, k, v, out, lse, dropout_p=0.0, softmax_scale=None, causal=False, *,
                        causal_type=None, philox=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                        max_seqlen_k=None, force_config=None, window_size=_NO_WINDOW, softcap=0.0,
                        alibi_slopes=None, deterministic=False):
    """Standalone backward: (dq, dk, dv) from the forward's out and lse (and
    the same philox state when dropout_p > 0, the same window_size / softcap /
    alibi_slopes). deterministic as in flash_attn_func."""
    rank = 4 if cu_seqlens_q is None else 3
    named = (("dout", dout), ("q", q), ("k", k), ("v", v), ("out", out), ("lse", lse))
    check_same_device(named + ((("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)) if rank == 3 else ()))
    for name, t in named[:5]:
        check_rank(t, rank, name, "tensor")
    seed = offset = None
    if dropout_p > 0:
        if philox is None:
            raise ValueError("dropout backward needs the forward's philox state")
        seed, offset = _check_philox(philox, q)
    varlen = None
    if rank == 3:
        _check_varlen(cu_seqlens_q, cu_seqlens_k)
        varlen = (cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k))
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
    batch = q.shape[0] if rank == 4 else cu_seqlens_q.shape[0] - 1
    feat = check_features(window_size, softcap, alibi_slopes, q, batch, q.shape[-2], float(dropout_p))
    return backward(dout, q, k, v, out, lse, seed, offset, scale, _causal_code(causal, causal_type), float(dropout_p),
                    force_config, varlen, feat, deterministic)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention's signature over
    (batch, heads, seqlen, head_dim) tensors; is_causal is top-left aligned as
    in torch; differentiable. attn_mask other than None raises NotImplementedError."""
    if attn_mask is not None:
        raise NotImplementedError("aotriton scaled_dot_product_attention: attn_mask is not supported "
                                  "(use is_causal, or attn_mask=None)")
    _check_qkv(query, key, value, 4, "(batch, heads, seqlen, head_dim)", ("query", "key", "value"))
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError("query and key head counts differ: pass enable_gqa=True for GQA/MQA")
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    out = _run(q, k, v, dropout_p, scale, CAUSAL_TOP_LEFT if is_causal else CAUSAL_NONE, False, False, False, None,
               None, None)
    return out.transpose(1, 2)
