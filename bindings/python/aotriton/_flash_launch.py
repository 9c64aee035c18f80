"""Flash attention: output allocation (shared by the eager path and the fake
implementations) and the eager launches into pyaotriton on real CUDA tensors."""
import functools

import pyaotriton as _C
import torch

from ._glue import _DTYPES, discard_buffer, eager_stream, view

_FP32, _INT8 = torch.float32, torch.int8
_FP32_CODE = _DTYPES[_FP32]
_attn_fwd, _attn_fwd_varlen = _C.attn_fwd, _C.attn_fwd_varlen
_attn_bwd, _attn_bwd_varlen = _C.attn_bwd, _C.attn_bwd_varlen


def empty_out(q, v):
    """The attention output: like q (same strides) with v's head dim; a head
    dim other than q's keeps q's dim order (e.g. SDPA's transposed views)."""
    dv = v.shape[-1]
    if dv == q.shape[-1]:
        return torch.empty_like(q)
    order = sorted(range(q.dim() - 1), key=lambda i: -q.stride(i))  # outermost first; head dim stays last
    out = q.new_empty([q.shape[i] for i in order] + [dv])
    return out.permute([order.index(i) for i in range(q.dim() - 1)] + [q.dim() - 1])


def fwd_outputs(q, k, return_mask, varlen, v=None):
    """out (like q, same strides, v's head dim), lse fp32, and the int8 keep mask (zeros) or None.

    varlen: None or (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k).
    """
    out = torch.empty_like(q) if v is None else empty_out(q, v)
    if varlen is None:
        B, Sq, Hq, _ = q.shape
        lse = q.new_empty(B, Hq, Sq, dtype=_FP32)
        mask_shape = (B, Hq, Sq, k.shape[1])
    else:
        Hq = q.shape[1]
        lse = q.new_empty(Hq, q.shape[0], dtype=_FP32)
        mask_shape = (varlen[0].shape[0] - 1, Hq, varlen[2], varlen[3])
    mask = q.new_zeros(mask_shape, dtype=_INT8) if return_mask else None
    return out, lse, mask


def fwd_plain(q, k, v, softmax_scale, causal, force_config):
    """The common eager inference call, kept short: batched, no dropout, no
    mask, no gradient; returns out. The LSE goes to a shared write-only
    buffer (nobody reads it), which saves an allocation per call."""
    qv = view(q, "q")
    shape = qv[1]
    B, Sq, Hq, D = shape
    scale = D ** -0.5 if softmax_scale is None else float(softmax_scale)
    stream = eager_stream(q)
    if stream is None:
        with torch.cuda.device(q.get_device()):
            return fwd_plain(q, k, v, softmax_scale, causal, force_config)
    out = torch.empty_like(q) if v.shape[-1] == D else empty_out(q, v)
    lse_ptr = discard_buffer(q.get_device(), B * Hq * Sq)
    _attn_fwd(qv, view(k, "k"), view(v, "v"), (out.data_ptr(), out.shape, out.stride(), qv[3]),
              (lse_ptr, (B, Hq, Sq), (Hq * Sq, Sq, 1), _FP32_CODE), scale, causal, 0.0, 0, 0, None, stream,
              force_config)
    return out


def _feature_kwargs(feat):
    """The bindings' keyword arguments for a feat tuple (_flash_features.py)."""
    if feat is None:
        return {}
    left, right, softcap, slopes = feat
    return dict(window_left=left, window_right=right, softcap=softcap,
                alibi_slopes=None if slopes is None else view(slopes, "alibi_slopes"))


def fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen, feat=None):
    """Eager forward: (out, lse, mask or None). seed/offset are the philox
    int64 device tensors (None when dropout is off and no mask is asked for).
    feat: None or the checked (window_left, window_right, softcap, alibi_slopes).
    Hot path: the output views skip the dtype lookup and reuse q's shape."""
    stream = eager_stream(q)
    if stream is None:
        with torch.cuda.device(q.get_device()):
            return fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen, feat)
    out, lse, mask = fwd_outputs(q, k, return_mask, varlen, v)
    qv = view(q, "q")
    out_v = (out.data_ptr(), qv[1] if out.shape[-1] == q.shape[-1] else out.shape, out.stride(), qv[3])
    lse_v = (lse.data_ptr(), lse.shape, lse.stride(), _FP32_CODE)
    seed_ptr = seed.data_ptr() if seed is not None else 0
    off_ptr = offset.data_ptr() if offset is not None else 0
    mask_v = None if mask is None else view(mask, "dropout_mask")
    if varlen is None:
        _attn_fwd(qv, view(k, "k"), view(v, "v"), out_v, lse_v, scale, causal, dropout_p, seed_ptr, off_ptr, mask_v,
                  stream, force_config, **_feature_kwargs(feat))
    else:
        cu_q, cu_k, max_q, max_k = varlen
        _attn_fwd_varlen(qv, view(k, "k"), view(v, "v"), out_v, lse_v, cu_q.data_ptr(), cu_k.data_ptr(),
                         cu_q.shape[0] - 1, max_q, max_k, scale, causal, dropout_p, seed_ptr, off_ptr, mask_v, stream,
                         force_config, **_feature_kwargs(feat))
    return out, lse, mask


def bwd_outputs(q, k, v):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@functools.lru_cache(maxsize=None)
def _is_sm90(device_index):
    return torch.cuda.get_device_capability(device_index) == (9, 0)


def dq_accum_for(q, v, dropout_p, force_config, varlen, feat):
    """The fp32 dQ workspace that lets attn_bwd sum dQ with atomics (flash.h
    BwdParams::dq_accum), for the calls its sm_90 kernel can serve, else None.
    (The C++ makes the final choice; this only avoids allocating for calls it
    would ignore the workspace for.)"""
    if (varlen is not None or dropout_p > 0 or feat is not None or force_config is not None
            or q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] not in (64, 128)
            or v.shape[-1] != q.shape[-1] or not _is_sm90(q.get_device())):
        return None
    return torch.empty(q.shape, dtype=_FP32, device=q.device)


def bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat=None,
        deterministic=True):
    """Eager backward: (dq, dk, dv), each with the dtype, shape and strides of q, k, v.
    deterministic=False: dQ by fp32 atomics where the sm_90 kernel serves the call."""
    stream = eager_stream(q)
    if stream is None:
        with torch.cuda.device(q.get_device()):
            return bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat,
                       deterministic)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dq, dk, dv = bwd_outputs(q, k, v)
    delta = torch.empty_like(lse)
    dropout = dropout_p > 0
    seed_ptr = seed.data_ptr() if dropout else 0
    off_ptr = offset.data_ptr() if dropout else 0
    args = [view(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout"), (lse, "lse"),
                                    (dq, "dq"), (dk, "dk"), (dv, "dv"), (delta, "delta"))]
    if varlen is None:
        dqa = None if deterministic else dq_accum_for(q, v, dropout_p, force_config, varlen, feat)
        _attn_bwd(*args, scale, causal, dropout_p, seed_ptr, off_ptr, stream, force_config,
                  dq_accum=None if dqa is None else view(dqa, "dq_accum"), **_feature_kwargs(feat))
    else:
        cu_q, cu_k, max_q, max_k = varlen
        _attn_bwd_varlen(*args, cu_q.data_ptr(), cu_k.data_ptr(), cu_q.shape[0] - 1, max_q, max_k, scale, causal,
                         dropout_p, seed_ptr, off_ptr, stream, force_config, **_feature_kwargs(feat))
    return dq, dk, dv
