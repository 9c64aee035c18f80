"""JIT launcher for tritonsrc.flash.fwd.attn_fwd (tests and JIT-vs-AOT benchmarks).

Works with CUDA tensors and, under TRITON_INTERPRET=1, with CPU tensors. The
call (argument order, strides by dim name, grid) comes from the rules
(python/rules_flash.py) through python/jit_launch.py, as in the AOT build.
"""
import math

import torch
import triton

from python import rules_flash
from python.jit.flash_features import feature_args
from python.jit_launch import View, launch
from tritonsrc.flash.fwd_configs import (DROPOUT_MASK_CONFIG, TUNING_CANDIDATES, head_dim_bucket,  # noqa: F401
                                        pick_config)

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
    flash-attn (flash_features.py maps them onto the band kernel).
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
        rows = dict(z=None, h=1, m=0)  # packed (total, H, D): cu_seqlens give each sequence's start
    else:
        assert q.dim() == 4 and layout in ("bshd", "bhsd")
        s_ax, h_ax = (1, 2) if layout == "bshd" else (2, 1)
        batch, hq, hk = q.shape[0], q.shape[h_ax], k.shape[h_ax]
        max_seqlen_q, max_seqlen_k = q.shape[s_ax], k.shape[s_ax]
        rows = dict(z=0, h=h_ax, m=s_ax)
    assert hq % hk == 0

    if out is not None:
        o = out
    elif head_dim_v == head_dim:
        o = torch.empty_like(q, memory_format=torch.contiguous_format)
    else:
        o = q.new_empty(q.shape[:-1] + (head_dim_v,))
    if varlen:
        lse = torch.empty((hq, q.shape[0]), dtype=torch.float32, device=device) if lse_out is None else lse_out
        lse_view = View(lse, z=None, h=0)
    else:
        lse = torch.empty((batch, hq, max_seqlen_q), dtype=torch.float32, device=device) if lse_out is None else lse_out
        lse_view = View(lse, z=0, h=1)
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

    feat = feature_args(causal_type, window, softcap, alibi_slopes)
    alibi = View(dummy if alibi_slopes is None else alibi_slopes,
                 z=0 if alibi_slopes is not None and alibi_slopes.dim() == 2 else None)
    cfg = default_config(head_dim, q.dtype, device, enable_dropout)
    if config:
        cfg.update(config)
    bucket = head_dim_bucket(head_dim)
    cu_q, cu_k = (cu_seqlens_q, cu_seqlens_k) if varlen else (dummy, dummy)
    block_dv = 0 if head_dim_v == head_dim else head_dim_v
    launch(rules_flash.attn_fwd_vdim if block_dv else rules_flash.attn_fwd, dict(
        Q=View(q, **rows), K=View(k, z=rows["z"], h=rows["h"], n=rows["m"]),
        V=View(v, z=rows["z"], h=rows["h"], n=rows["m"]), O=View(o, **rows), LSE=lse_view,
        cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, philox_seed_ptr=seed_t, philox_offset_ptr=off_t,
        sm_scale=float(sm_scale), dropout_p=float(dropout_p),
        num_seqs=batch, num_heads_q=hq, num_heads_k=hk, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        head_dim=head_dim, total_q=q.shape[0], total_k=k.shape[0],
        alibi_slopes=alibi, softcap=feat["softcap"], window_left=feat["window_left"],
        window_right=feat["window_right"], window_align=feat["window_align"],
    ), functional=dict(
        BLOCK_DMODEL=bucket, PADDED_HEAD=(bucket != head_dim), CAUSAL_TYPE=feat["CAUSAL_TYPE"],
        IS_VARLEN=varlen, ENABLE_DROPOUT=enable_dropout,
        LOCAL_WINDOW=feat["LOCAL_WINDOW"], SCORE_MOD=feat["SCORE_MOD"],
        BLOCK_DV=block_dv,
    ), config={k_: cfg[k_] for k_ in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")})
    if return_mask:
        # The forward does not write its mask: this kernel regenerates it from
        # the same seed/offset (tritonsrc/flash/dropout_mask.py).
        launch(rules_flash.attn_dropout_mask, dict(
            philox_seed_ptr=seed_t, philox_offset_ptr=off_t, dropout_mask=View(mask, z=0, h=1, m=2),
            cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, dropout_p=float(dropout_p),
            num_heads_q=hq, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
            total_q=q.shape[0], total_k=k.shape[0], num_seqs=batch,
        ), functional=dict(IS_VARLEN=varlen), config=DROPOUT_MASK_CONFIG)
        return o, lse, mask
    return o, lse


def default_sm_scale(head_dim):
    return 1.0 / math.sqrt(head_dim)
