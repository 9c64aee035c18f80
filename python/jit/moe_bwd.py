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

Each launch's argument order, strides and grid come from the rules
(python/rules_moe.py) through python/jit_launch.py.
"""
import torch

from python import rules_moe as R
from python.jit import moe as mj
from python.jit_launch import View, launch
from tritonsrc.moe.activation import SILU

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
    aligned = _aligned(K, N, a.stride(0), b.stride(0), b.stride(1), c.stride(0))
    launch(R.moe_dgrad, dict(
        a_ptr=View(a, m=0), b_ptr=View(b, e=0, k=1), c_ptr=View(c, m=0), sorted_token_ids_ptr=sorted_ids,
        expert_ids_ptr=expert_ids, num_tokens_post_padded_ptr=ntpp, N=N, K=K, EM=sorted_ids.numel(),
        num_valid_tokens=c.shape[0], top_k=top_k, num_experts=E,
    ), dict(ALIGNED=aligned, BLOCK_SIZE_M=config["BLOCK_SIZE_M"]),
        {n: config[n] for n in ("BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")})
    return c


def wgrad(dy, x, dw, topk_weights, sorted_ids, expert_ids, ntpp, num_slots, top_k_dy, top_k_x, config):
    """dw[e] = sum_s (dy[s // top_k_dy] (* topk_weights[s]))^T x[s // top_k_x]; dw [E, N, K]."""
    E, N, K = dw.shape
    mul = topk_weights is not None
    w = topk_weights if mul else dy
    aligned = _aligned(K, N, dy.stride(0), x.stride(0), dw.stride(0), dw.stride(1))
    launch(R.moe_wgrad, dict(
        dy_ptr=View(dy, m=0), x_ptr=View(x, m=0), dw_ptr=View(dw, e=0, n=1), topk_weights_ptr=w,
        sorted_token_ids_ptr=sorted_ids, expert_ids_ptr=expert_ids, num_tokens_post_padded_ptr=ntpp, N=N, K=K,
        num_valid_tokens=num_slots, top_k_dy=top_k_dy, top_k_x=top_k_x, num_experts=E,
    ), dict(MUL_ROUTED_WEIGHT=mul, ALIGNED=aligned, BLOCK_SIZE_M=config["BLOCK_SIZE_M"], SCAN_BLOCK=SCAN_BLOCK),
        {n: config[n] for n in ("BLOCK_SIZE_N", "BLOCK_SIZE_K", "num_warps", "num_stages")})
    return dw


def act_and_mul_bwd(h, g, w, dh, activation=SILU, block=256):
    """(a, dw): dh written (may be h), a = act(gate) * up, dw fp32 [rows]."""
    rows, n = g.shape
    a = torch.empty_like(g)
    dw = torch.empty(rows, dtype=torch.float32, device=g.device)
    launch(R.act_and_mul_bwd, dict(
        h_ptr=View(h, row=0), g_ptr=View(g, row=0), w_ptr=w, dh_ptr=View(dh, row=0), a_ptr=View(a, row=0),
        dw_ptr=dw, n_rows=rows, n_cols=n,
    ), dict(ACTIVATION=activation), dict(BLOCK=block))
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
