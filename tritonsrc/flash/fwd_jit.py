"""JIT launcher for tritonsrc.flash.fwd.attn_fwd (tests and JIT-vs-AOT benchmarks).

Works with CUDA tensors and, under TRITON_INTERPRET=1, with CPU tensors.
"""
import math

import torch
import triton

from .dropout_mask import attn_dropout_mask
from .feature_args import feature_args
from .fwd import attn_fwd

from .fwd_configs import DROPOUT_MASK_CONFIG, TUNING_CANDIDATES, head_dim_bucket, pick_config  # noqa: F401

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def default_config(head_dim, dtype, device, dropout=False):
    arch = 90
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        arch = major * 10 + minor
    return pick_config(arch, head_dim, _DTYPE_NAMES[dtype], dropout)


_DUMMIES = {}


def _dummy(device):
    """One cached int32 tensor per device for the pointers a functional ignores."""
    if device not in _DUMMIES:
        _DUMMIES[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _DUMMIES[device]


def _as_i64_scalar(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int64).reshape(1)
    return torch.tensor([int(x)], dtype=torch.int64, device=device)


def attn_fwd_jit(q, k, v, *, sm_scale, causal_type=0, layout="bshd",
                 cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
                 dropout_p=0.0, philox_seed=None, philox_offset=None, return_mask=False,
                 config=None, out=None, lse_out=None, mask_out=None,
                 window=None, softcap=0.0, alibi_slopes=None):
    """Run the forward kernel. Returns (o, lse) or (o, lse, mask).

    Batched: q is (B, Sq, Hq, D) for layout "bshd" or (B, Hq, Sq, D) for
    "bhsd"; k/v likewise with Hk heads; lse is (B, Hq, Sq) float32.
    Varlen (cu_seqlens_q given): q is (total_q, Hq, D), k/v (total_k, Hk, D),
    cu_seqlens_* int32 (B+1,), lse is (Hq, total_q).
    mask (return_mask) is int8 (B, Hq, max_seqlen_q, max_seqlen_k).
    out / lse_out / mask_out: optional preallocated outputs (tests poison them).
    window (left, right), softcap, alibi_slopes fp32 (Hq,) or (B, Hq): as
    flash-attn (feature_args.py maps them onto the band kernel).
    v may have another head dim than q/k (a power of two >= 16: BLOCK_DV);
    o then has v's.
    """
    varlen = cu_seqlens_q is not None
    device = q.device
    assert q.dtype == k.dtype == v.dtype and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1
    head_dim = q.shape[-1]
    head_dim_v = v.shape[-1]
    assert k.shape[-1] == head_dim
    assert head_dim_v == head_dim or head_dim_v == triton.next_power_of_2(max(head_dim_v, 16))
    if varlen:
        assert cu_seqlens_k is not None and q.dim() == 3
        batch = cu_seqlens_q.numel() - 1
        hq, hk = q.shape[1], k.shape[1]
        if max_seqlen_q is None:
            max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
        if max_seqlen_k is None:
            max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max())
        sq = (0, q.stride(1), q.stride(0))
        sk = (0, k.stride(1), k.stride(0))
        sv = (0, v.stride(1), v.stride(0))
    else:
        assert q.dim() == 4 and layout in ("bshd", "bhsd")
        s_ax, h_ax = (1, 2) if layout == "bshd" else (2, 1)
        batch, hq, hk = q.shape[0], q.shape[h_ax], k.shape[h_ax]
        max_seqlen_q, max_seqlen_k = q.shape[s_ax], k.shape[s_ax]
        sq = (q.stride(0), q.stride(h_ax), q.stride(s_ax))
        sk = (k.stride(0), k.stride(h_ax), k.stride(s_ax))
        sv = (v.stride(0), v.stride(h_ax), v.stride(s_ax))
    assert hq % hk == 0

    if out is not None:
        o = out
    elif head_dim_v == head_dim:
        o = torch.empty_like(q, memory_format=torch.contiguous_format)
    else:
        o = q.new_empty(q.shape[:-1] + (head_dim_v,))
    if varlen:
        so = (0, o.stride(1), o.stride(0))
        lse = torch.empty((hq, q.shape[0]), dtype=torch.float32, device=device) if lse_out is None else lse_out
        slse = (0, lse.stride(0))
    else:
        so = (o.stride(0), o.stride(h_ax), o.stride(s_ax))
        lse = torch.empty((batch, hq, max_seqlen_q), dtype=torch.float32, device=device) if lse_out is None else lse_out
        slse = (lse.stride(0), lse.stride(1))
    assert lse.stride(-1) == 1

    dummy = _dummy(device)
    enable_dropout = dropout_p > 0.0 or return_mask
    if enable_dropout:
        seed_t = _as_i64_scalar(0 if philox_seed is None else philox_seed, device)
        off_t = _as_i64_scalar(0 if philox_offset is None else philox_offset, device)
    else:
        seed_t = off_t = dummy
    mask = None
    if return_mask:
        mask = (torch.empty((batch, hq, max_seqlen_q, max_seqlen_k), dtype=torch.int8, device=device)
                if mask_out is None else mask_out)
        assert mask.stride(-1) == 1
        smask = (mask.stride(0), mask.stride(1), mask.stride(2))

    feat = feature_args(causal_type, window, softcap, alibi_slopes)
    alibi = dummy if alibi_slopes is None else alibi_slopes
    alibi_z = alibi_slopes.stride(0) if alibi_slopes is not None and alibi_slopes.dim() == 2 else 0
    cfg = default_config(head_dim, q.dtype, device, enable_dropout)
    if config:
        cfg.update(config)
    bucket = head_dim_bucket(head_dim)
    grid = (triton.cdiv(max_seqlen_q, cfg["BLOCK_M"]), batch * hq, 1)
    attn_fwd[grid](
        q, k, v, o, lse,
        cu_seqlens_q if varlen else dummy, cu_seqlens_k if varlen else dummy,
        seed_t, off_t,
        float(sm_scale), float(dropout_p),
        *sq, *sk, *sv, *so, *slse,
        batch, hq, hk, max_seqlen_q, max_seqlen_k, head_dim, q.shape[0], k.shape[0],
        alibi, alibi_z, feat["softcap"], feat["window_left"], feat["window_right"], feat["window_align"],
        BLOCK_DMODEL=bucket, PADDED_HEAD=(bucket != head_dim), CAUSAL_TYPE=feat["CAUSAL_TYPE"],
        IS_VARLEN=varlen, ENABLE_DROPOUT=enable_dropout,
        LOCAL_WINDOW=feat["LOCAL_WINDOW"], SCORE_MOD=feat["SCORE_MOD"],
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_DV=0 if head_dim_v == head_dim else head_dim_v,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if return_mask:
        # The forward does not write its mask: this kernel regenerates it from
        # the same seed/offset (tritonsrc/flash/dropout_mask.py).
        mc = DROPOUT_MASK_CONFIG
        attn_dropout_mask[(triton.cdiv(max_seqlen_q, mc["BLOCK_M"]), batch * hq, 1)](
            seed_t, off_t, mask,
            cu_seqlens_q if varlen else dummy, cu_seqlens_k if varlen else dummy,
            float(dropout_p), *smask, hq, max_seqlen_q, max_seqlen_k, q.shape[0], k.shape[0],
            IS_VARLEN=varlen, BLOCK_M=mc["BLOCK_M"], BLOCK_N=mc["BLOCK_N"],
            num_warps=mc["num_warps"], num_stages=mc["num_stages"],
        )
        return o, lse, mask
    return o, lse


def default_sm_scale(head_dim):
    return 1.0 / math.sqrt(head_dim)
