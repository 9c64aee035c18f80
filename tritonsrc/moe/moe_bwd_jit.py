"""JIT composition of fused_experts' backward (CPU interpreter tests, GPU JIT
comparisons): the same kernels and order as the AOT operator
(v2src/ops/moe_fused_bwd.cc).

    align (block size = BLOCK_SIZE_M)
    h   = GEMM1(x, w1)                      recomputed [M*topk, 2N]
    g   = dgrad(dout rows slot // topk, w2) [M*topk, N]   (before the routing weight)
    act_and_mul_bwd(h, g, w) -> dh (in place over h), a = act(gate)*up, d topk_weights
    dw2 = wgrad(dout * w, a)                [E, K, N]
    dw1 = wgrad(dh, x rows slot // topk)    [E, 2N, K]
    dx  = moe_sum(dgrad(dh, w1))            [M, K]
"""
import torch
import triton

from . import moe_jit as mj
from .activation import SILU
from .activation_bwd import act_and_mul_bwd_kernel
from .grouped_gemm_bwd import moe_dgrad_kernel, moe_wgrad_kernel

BWD_BLOCK_SIZE_M = 64  # the align block size of the backward (one functional)
DEFAULT_BWD_CONFIG = {"BLOCK_SIZE_M": BWD_BLOCK_SIZE_M, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64,
                      "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 3}
SCAN_BLOCK = 1024  # expert-id blocks the wgrad kernel scans per step


def _aligned(*values):
    return all(v % 16 == 0 for v in values)


def dgrad(a, b, c, sorted_ids, expert_ids, ntpp, top_k, config):
    """c[slot] = a[slot // top_k] @ b[e], a [rows, K], b [E, K, N] (N contiguous)."""
    E, K, N = b.shape
    assert a.stride(1) == 1 and b.stride(2) == 1 and c.stride(1) == 1
    EM = sorted_ids.numel()
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    grid = (triton.cdiv(EM, bm) * triton.cdiv(N, bn), 1, 1)
    aligned = _aligned(K, N, a.stride(0), b.stride(0), b.stride(1), c.stride(0))
    moe_dgrad_kernel[grid](a, b, c, sorted_ids, expert_ids, ntpp, N, K, EM, c.shape[0], top_k,
                           a.stride(0), b.stride(0), b.stride(1), c.stride(0), E, ALIGNED=aligned,
                           BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=config["BLOCK_SIZE_K"],
                           GROUP_SIZE_M=config["GROUP_SIZE_M"], num_warps=config["num_warps"],
                           num_stages=config["num_stages"])
    return c


def wgrad(dy, x, dw, topk_weights, sorted_ids, expert_ids, ntpp, num_slots, top_k_dy, top_k_x, config):
    """dw[e] = sum_s (dy[s // top_k_dy] (* topk_weights[s]))^T x[s // top_k_x]; dw [E, N, K]."""
    E, N, K = dw.shape
    bn, bk = config["BLOCK_SIZE_N"], config["BLOCK_SIZE_K"]
    grid = (E * triton.cdiv(N, bn) * triton.cdiv(K, bk), 1, 1)
    mul = topk_weights is not None
    w = topk_weights if mul else dy
    aligned = _aligned(K, N, dy.stride(0), x.stride(0), dw.stride(0), dw.stride(1))
    moe_wgrad_kernel[grid](dy, x, dw, w, sorted_ids, expert_ids, ntpp, N, K, num_slots, top_k_dy, top_k_x,
                           dy.stride(0), x.stride(0), dw.stride(0), dw.stride(1), E, MUL_ROUTED_WEIGHT=mul,
                           ALIGNED=aligned, BLOCK_SIZE_M=config["BLOCK_SIZE_M"], BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk,
                           SCAN_BLOCK=SCAN_BLOCK, num_warps=config["num_warps"], num_stages=config["num_stages"])
    return dw


def act_and_mul_bwd(h, g, w, dh, activation=SILU, block=256):
    """(a, dw): dh written (may be h), a = act(gate) * up, dw fp32 [rows]."""
    rows, n = g.shape
    a = torch.empty_like(g)
    dw = torch.empty(rows, dtype=torch.float32, device=g.device)
    act_and_mul_bwd_kernel[(rows, 1, 1)](h, g, w, dh, a, dw, rows, n, h.stride(0), g.stride(0), dh.stride(0),
                                         a.stride(0), ACTIVATION=activation, BLOCK=block)
    return a, dw


def fused_experts_bwd_jit(dout, hidden, w1, w2, topk_weights, topk_ids, activation=SILU, config=None,
                          fwd_config=None, align_path="auto"):
    """(dx [M, K], dw1 [E, 2N, K], dw2 [E, K, N], d topk_weights fp32 [M, topk]) of
    fused_experts_jit's output with gradient dout [M, K]. Slots whose id is outside
    [0, E) contribute nothing (zero gradients)."""
    config = dict(config or DEFAULT_BWD_CONFIG)
    M, K = hidden.shape
    E, N2, _ = w1.shape
    topk = topk_ids.shape[1]
    slots = M * topk
    sorted_ids, expert_ids, ntpp = mj.moe_align_block_size(topk_ids, config["BLOCK_SIZE_M"], E, path=align_path)
    weights = topk_weights.to(torch.float32).contiguous().reshape(-1)
    fwd = dict(fwd_config or {k: config[k] for k in ("BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps",
                                                     "num_stages")}, BLOCK_SIZE_M=config["BLOCK_SIZE_M"])
    # Unlisted slots (ids outside [0, E)) are never written by the GEMMs: zeros keep them out.
    h = torch.zeros(slots, N2, dtype=hidden.dtype, device=hidden.device)
    mj.invoke_grouped_gemm(hidden, w1, h, None, sorted_ids, expert_ids, ntpp, topk, fwd)
    g = torch.zeros(slots, N2 // 2, dtype=hidden.dtype, device=hidden.device)
    dgrad(dout, w2, g, sorted_ids, expert_ids, ntpp, topk, config)
    a, dweights = act_and_mul_bwd(h, g, weights, h, activation)
    dh = h
    dw2 = torch.empty_like(w2)
    wgrad(dout, a, dw2, weights, sorted_ids, expert_ids, ntpp, slots, topk, 1, config)
    dw1 = torch.empty_like(w1)
    wgrad(dh, hidden, dw1, None, sorted_ids, expert_ids, ntpp, slots, 1, topk, config)
    dxs = torch.zeros(slots, K, dtype=hidden.dtype, device=hidden.device)
    dgrad(dh, w1, dxs, sorted_ids, expert_ids, ntpp, 1, config)
    dx = mj.moe_sum(dxs.view(M, topk, K))
    return dx, dw1, dw2, dweights.view(M, topk)
