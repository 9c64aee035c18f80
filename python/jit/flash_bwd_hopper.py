"""JIT launcher for the Gluon Hopper backward (tritonsrc/flash/bwd_hopper.py),
an experiment: bwd_preprocess -> bwd_dkdv_hopper -> either bwd_dq_convert
(FUSE_DQ: dQ by fp32 atomics) or the Triton bwd_dq kernel. Needs an sm_90 GPU.

The TMA descriptors are built like flash_fwd_hopper's (5-D view [B, H, D/64, S,
64], box [1, 1, D/64, rows, 64], Triton's default NVMMA layout for the box),
through kernel_rules.TmaArg so the CPU compile check builds the same types.
"""
import torch
import triton

from tritonsrc.flash.bwd_configs import DEFAULT_CONFIGS
from tritonsrc.flash.bwd_dq import bwd_dq
from tritonsrc.flash.bwd_dq_convert import bwd_dq_convert
from tritonsrc.flash.bwd_hopper import bwd_dkdv_hopper
from tritonsrc.flash.bwd_preprocess import bwd_preprocess

# By head dim: 64 query rows per step keeps S^T, dP^T and dK/dV in 240
# registers (128 rows spill at head dim 64); two warpgroups of 64 keys each;
# dQ by atomics; warp-specialized (SCHEDULE 1).
DEFAULT = {64: {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 2, "SCHEDULE": 1, "FUSE_DQ": True, "num_warps": 8},
           128: {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 2, "SCHEDULE": 1, "FUSE_DQ": True, "num_warps": 8}}
DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def tma_arg(name, rows):
    """The descriptor argument as a rule would declare it (rules_flash_hopper._qkv)."""
    from python.kernel_rules import TmaArg
    return TmaArg(name, "{dtype}", ("1", "1", "BLOCK_DMODEL / 64", rows, "64"))


DESC_ROWS = {"q_desc": "BLOCK_M", "k_desc": "BLOCK_N", "v_desc": "BLOCK_N", "do_desc": "BLOCK_M"}


def _view(name, t, functional, config):
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    arg = tma_arg(name, DESC_ROWS[name])
    B, S, H, D = t.shape
    shape = [B, H, D // 64, S, 64]
    strides = [t.stride(0), t.stride(2), 64, t.stride(1), 1]
    return TensorDescriptor(t, shape, strides, arg.block_shape(functional, config), arg.layout(functional, config))


def _check(q, k, v, o, do, lse):
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    if q.dtype not in DTYPES or any(t.dtype != q.dtype for t in (k, v, o, do)):
        raise ValueError("fp16 or bf16 q/k/v/o/do of one type")
    if D not in DEFAULT or k.shape[3] != D or v.shape[3] != D:
        raise ValueError(f"head dim 64 or 128 for q, k and v, got {D}")
    if Hq % Hk or v.shape[:3] != k.shape[:3] or o.shape != q.shape or do.shape != q.shape:
        raise ValueError("q/o/do [B, Sq, Hq, D], k/v [B, Sk, Hk, D], Hq a multiple of Hk")
    if Sq == 0 or Sk == 0:
        raise ValueError("empty sequences")
    for t in (q, k, v, do):
        if t.stride(3) != 1 or t.data_ptr() % 16 or any(s % 8 for s in t.stride()[:3]):
            raise ValueError("TMA needs 16-byte aligned rows with a contiguous head dim")
    if lse.shape != (B, Hq, Sq) or lse.dtype != torch.float32 or lse.stride(2) != 1:
        raise ValueError("lse: float32 [B, Hq, Sq]")


def attn_bwd_hopper_jit(do, q, k, v, o, lse, sm_scale, causal_type=0, config=None, out=None):
    """(dq, dk, dv) for [B, S, H, D] q/k/v/o/do and the forward's natural-log
    lse [B, Hq, Sq]; config: DEFAULT[D] keys. out: optional (dq, dk, dv)."""
    _check(q, k, v, o, do, lse)
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    config = dict(config or DEFAULT[D])
    functional = {"dtype": DTYPES[q.dtype], "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal_type}
    dq, dk, dv = out if out is not None else (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    delta = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32)
    fuse = config["FUSE_DQ"]
    dqa = torch.empty(q.shape, device=q.device, dtype=torch.float32) if fuse else delta
    s_dqa = (dqa.stride(0), dqa.stride(2), dqa.stride(1)) if fuse else (0, 0, 0)
    seqs = torch.zeros(1, dtype=torch.int32, device=q.device)
    pre_block = 128
    bwd_preprocess[(triton.cdiv(Sq, pre_block), B * Hq, 1)](
        o, do, delta, dqa, seqs, o.stride(0), o.stride(2), o.stride(1), do.stride(0), do.stride(2), do.stride(1),
        delta.stride(0), delta.stride(1), *s_dqa, Hq, Sq, D, B,
        BLOCK_DMODEL=D, PADDED_HEAD=False, IS_VARLEN=False, ZERO_DQ_ACC=fuse, BLOCK_M=pre_block, num_warps=4)
    descs = [_view(n, t, functional, config) for n, t in (("q_desc", q), ("k_desc", k), ("v_desc", v),
                                                          ("do_desc", do))]
    bwd_dkdv_hopper[(triton.cdiv(Sk, config["BLOCK_N"]), B * Hk)](
        *descs, dk, dv, dqa, lse, delta, float(sm_scale),
        dk.stride(0), dk.stride(2), dk.stride(1), dv.stride(0), dv.stride(2), dv.stride(1), *s_dqa,
        lse.stride(0), lse.stride(1), delta.stride(0), delta.stride(1), Hq, Hk, Sq, Sk,
        BLOCK_DMODEL=D, CAUSAL_TYPE=causal_type, FUSE_DQ=fuse, BLOCK_M=config["BLOCK_M"],
        BLOCK_N=config["BLOCK_N"], NUM_STAGES=config["NUM_STAGES"], SCHEDULE=config["SCHEDULE"],
        num_warps=config["num_warps"])
    s_dq = (dq.stride(0), dq.stride(2), dq.stride(1))
    if fuse:
        bwd_dq_convert[(triton.cdiv(Sq, pre_block), B * Hq, 1)](
            dqa, dq, seqs, float(sm_scale), *s_dqa, *s_dq, Hq, Sq, D, B,
            BLOCK_DMODEL=D, PADDED_HEAD=False, IS_VARLEN=False, BLOCK_M=pre_block, num_warps=4)
        return dq, dk, dv
    # The split path's dQ kernel (tritonsrc/flash/bwd_dq.py) with its sm_90 defaults.
    bm, bn, w, st = DEFAULT_CONFIGS[(90, "16bit")]["dq"][D]
    seed = torch.zeros(1, dtype=torch.int64, device=q.device)
    strides = [(t.stride(0), t.stride(2), t.stride(1)) for t in (q, k, v, do, dq)]
    bwd_dq[(triton.cdiv(Sq, bm), B * Hq, 1)](
        q, k, v, do, dq, lse, delta, seqs, seqs, seed, seed, float(sm_scale), 0.0,
        *(s for st3 in strides for s in st3), lse.stride(0), lse.stride(1), delta.stride(0), delta.stride(1),
        Hq, Hk, Sq, Sk, D, B, B, seqs, 0, 0.0, -1, -1, 0,  # no window / softcap / ALiBi
        BLOCK_DMODEL=D, PADDED_HEAD=False, CAUSAL_TYPE=causal_type, IS_VARLEN=False, ENABLE_DROPOUT=False,
        LOCAL_WINDOW=False, SCORE_MOD=0, BLOCK_DV=0, BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st)
    return dq, dk, dv
