"""JIT launcher for the flash attention backward kernels (tests, benchmarks).

Runs bwd_preprocess -> bwd_dkdv -> bwd_dq through the Triton JIT on torch
tensors: CUDA tensors on a GPU, CPU tensors under TRITON_INTERPRET=1. The AOT
runtime launches the same kernels with the same arguments and grids: the
split path's calls come from the rules (python/rules_flash.py) through
python/jit_launch.py.
"""
import torch
import triton

from python import rules_flash
from python.jit.flash_features import feature_args
from python.jit_launch import View, launch
from tritonsrc.flash.bwd_configs import CANDIDATE_CONFIGS, DEFAULT_CONFIGS, DROPOUT_SHRINK, PRE_CONFIG  # noqa: F401

# Tiny tiles for the interpreter: many blocks on small shapes, fast numpy.
INTERP_CONFIG = {"pre": {"BLOCK_M": 16}, "dkdv": {"BLOCK_M": 16, "BLOCK_N": 16},
                 "dq": {"BLOCK_M": 16, "BLOCK_N": 16}}


def _bucket(head_dim):
    return max(16, triton.next_power_of_2(head_dim))


def default_config(head_dim, dtype, arch, dropout=False):
    """Config dict for attn_bwd_jit(config=...) from DEFAULT_CONFIGS."""
    arch = 90 if arch >= 90 else 80
    kind = "fp32" if dtype == torch.float32 else "16bit"
    b = _bucket(head_dim)
    cfg = {"pre": dict(PRE_CONFIG)}
    if b == 256:
        cfg["pre"]["BLOCK_M"] = 64
    for kern in ("dkdv", "dq"):
        bm, bn, w, s = DEFAULT_CONFIGS[(arch, kind)][kern][b]
        c = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}
        if dropout and kind == "16bit":
            key = DROPOUT_SHRINK[kern]
            c[key] = max(16, c[key] // 2)
        cfg[kern] = c
    return cfg


def _view(t, layout, varlen, rows="m"):
    """t as the kernels address it (dims z, h and rows = "m" for query-side
    tensors, "n" for key-side ones)."""
    assert t.stride(-1) == 1, "last dim must be contiguous"
    if varlen:
        return View(t, z=None, h=1, **{rows: 0})
    h_ax, s_ax = (2, 1) if layout == "bshd" else (1, 2)
    return View(t, z=0, h=h_ax, **{rows: s_ax})


def _scalar_i64(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int64).reshape(1)
    return torch.tensor([0 if x is None else int(x)], dtype=torch.int64, device=device)


def attn_bwd_jit(do, q, k, v, o, lse, *, sm_scale, causal_type=0, layout="bshd",
                 cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
                 dropout_p=0.0, philox_seed=None, philox_offset=None, config=None, out=None,
                 delta_out=None, window=None, softcap=0.0, alibi_slopes=None):
    """Gradients (dq, dk, dv) of flash attention.

    Batched: q/o/do (B, Sq, Hq, D) for layout "bshd" or (B, Hq, Sq, D) for
    "bhsd", k/v likewise with Hk heads; lse (B, Hq, Sq) float32.
    Varlen (cu_seqlens_q/k given, int32 [B+1]): q/o/do (total_q, Hq, D),
    k/v (total_k, Hk, D), lse (Hq, total_q).
    philox_seed / philox_offset: int64 tensors or ints (dropout only).
    config: {"pre": {...}, "dkdv": {...}, "dq": {...}} with BLOCK_M/BLOCK_N/
    num_warps/num_stages; default: default_config() on CUDA, tiny tiles on CPU.
    out: optional (dq, dk, dv) tensors to write into (e.g. NaN-poisoned).
    delta_out: optional fp32 workspace shaped like lse (tests give it guards).
    window, softcap, alibi_slopes: as attn_fwd_jit.
    v/o/do may have another head dim than q/k (BLOCK_DV, as attn_fwd_jit):
    dv has v's, delta sums over it. (dQ by atomics exists on sm_90 only:
    flash_bwd_hopper.py.)
    """
    varlen = cu_seqlens_q is not None
    head_dim = q.shape[-1]
    block_d = _bucket(head_dim)
    head_dim_v = v.shape[-1]
    block_dv = 0 if head_dim_v == head_dim else head_dim_v
    if varlen:
        batch = cu_seqlens_q.numel() - 1
        hq, hk = q.shape[1], k.shape[1]
        if max_seqlen_q is None:
            max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
        if max_seqlen_k is None:
            max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max())
        assert lse.stride(-1) == 1
    else:
        batch = q.shape[0]
        hdim_axis = 2 if layout == "bshd" else 1
        sdim_axis = 1 if layout == "bshd" else 2
        hq, hk = q.shape[hdim_axis], k.shape[hdim_axis]
        max_seqlen_q = q.shape[sdim_axis]
        max_seqlen_k = k.shape[sdim_axis]
        assert lse.stride(-1) == 1
        cu_seqlens_q = cu_seqlens_k = torch.zeros(1, dtype=torch.int32, device=q.device)
    assert hq % hk == 0

    if out is None:
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    else:
        dq, dk, dv = out
    delta = torch.empty(lse.shape, dtype=torch.float32, device=q.device) if delta_out is None else delta_out

    if config is None:
        if q.is_cuda:
            major, minor = torch.cuda.get_device_capability(q.device)
            config = default_config(head_dim, q.dtype, major * 10 + minor, dropout_p > 0.0)
        else:
            config = INTERP_CONFIG
    enable_dropout = dropout_p > 0.0
    seed_t = _scalar_i64(philox_seed, q.device)
    off_t = _scalar_i64(philox_offset, q.device)
    func = dict(BLOCK_DMODEL=block_d, PADDED_HEAD=head_dim != block_d, IS_VARLEN=varlen)

    pre = dict(config["pre"])
    stats = dict(z=None, h=0) if varlen else dict(z=0, h=1)  # lse / delta: [Hq, total_q] or [B, Hq, Sq]
    no_dqa = View(delta, z=None, h=None, m=None)  # the fp32 dQ accumulator: sm_90's atomic path only
    pre_cfg = {"num_warps": 4, "num_stages": 1, **pre}  # the rule's only launch options
    # delta = rowsum(dO * O) runs over V's head dim.
    pre_func = dict(func, BLOCK_DMODEL=_bucket(head_dim_v), PADDED_HEAD=head_dim_v != _bucket(head_dim_v))
    launch(rules_flash.bwd_preprocess, dict(
        O=_view(o, layout, varlen), DO=_view(do, layout, varlen), Delta=View(delta, **stats), DQA=no_dqa,
        cu_seqlens_q=cu_seqlens_q, num_heads_q=hq, max_seqlen_q=max_seqlen_q, head_dim=head_dim_v,
        total_q=q.shape[0], num_seqs=batch,
    ), functional=dict(pre_func, ZERO_DQ_ACC=False), config=pre_cfg)

    feat = feature_args(causal_type, window, softcap, alibi_slopes)
    func.update(CAUSAL_TYPE=feat["CAUSAL_TYPE"], ENABLE_DROPOUT=enable_dropout)
    alibi = cu_seqlens_q if alibi_slopes is None else alibi_slopes  # any pointer when unused
    modes = dict(LOCAL_WINDOW=feat["LOCAL_WINDOW"], SCORE_MOD=feat["SCORE_MOD"], BLOCK_DV=block_dv)
    kv = dict(config["dkdv"])
    shared = dict(
        Q=_view(q, layout, varlen), K=_view(k, layout, varlen, "n"), V=_view(v, layout, varlen, "n"),
        DO=_view(do, layout, varlen), LSE=View(lse, **stats), Delta=View(delta, **stats),
        cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, philox_seed_ptr=seed_t, philox_offset_ptr=off_t,
        sm_scale=float(sm_scale), dropout_p=float(dropout_p),
        num_heads_q=hq, num_heads_k=hk, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, head_dim=head_dim,
        total_q=q.shape[0], total_k=k.shape[0], num_seqs=batch,
        alibi_slopes=View(alibi, z=0 if alibi_slopes is not None and alibi_slopes.dim() == 2 else None),
        softcap=feat["softcap"], window_left=feat["window_left"], window_right=feat["window_right"],
        window_align=feat["window_align"],
    )
    dkdv_rule, dq_rule = ((rules_flash.bwd_dkdv_vdim, rules_flash.bwd_dq_vdim) if block_dv
                          else (rules_flash.bwd_dkdv, rules_flash.bwd_dq))
    launch(dkdv_rule, dict(shared, DK=_view(dk, layout, varlen, "n"), DV=_view(dv, layout, varlen, "n")),
           functional=dict(func, **modes), config=kv)
    launch(dq_rule, dict(shared, DQ=_view(dq, layout, varlen)), functional=dict(func, **modes),
           config=dict(config["dq"]))
    return dq, dk, dv
