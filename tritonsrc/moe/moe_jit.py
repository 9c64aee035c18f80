"""Plain-Python JIT launchers of the MoE kernels on torch tensors, and a
`fused_experts_jit` composition (the vLLM fused_experts flow).

Used by the CPU interpreter tests, the GPU JIT tests and the JIT-vs-AOT
benchmark; launch parameters mirror what the C++ runtime passes.
"""
import torch
import triton

from .activation import act_and_mul_kernel, SILU, GELU
from .align import (moe_align_count_kernel, moe_align_scan_kernel, moe_align_offsets_kernel,
                    moe_align_scatter_kernel, moe_align_small_kernel)
# Config tables live in configs.py (shared with the AOT rules); re-exported here.
from .configs import (DEFAULT_CONFIGS, QUANT_FP8_BLOCK, QUANT_FP8_TENSOR, QUANT_NONE,  # noqa: F401
                      SWEEP_CANDIDATES, default_config)
from .grouped_gemm import fused_moe_kernel
from .moe_sum import moe_sum_kernel
from .quant import per_token_group_quant_fp8_kernel, per_tensor_quant_fp8_kernel
from .topk_softmax import topk_softmax_kernel

FP8 = torch.float8_e4m3fn


def _block_e(num_experts, lo):
    return max(lo, triton.next_power_of_2(num_experts))


def topk_softmax(logits, topk, renormalize=False, block_m=None, num_warps=4):
    """logits [M, E] -> (topk_weights fp32 [M, topk], topk_ids int32 [M, topk])."""
    M, E = logits.shape
    block_e = _block_e(E, 8)
    if block_m is None:
        block_m = max(1, 1024 // block_e)
    w = torch.empty(M, topk, dtype=torch.float32, device=logits.device)
    ids = torch.empty(M, topk, dtype=torch.int32, device=logits.device)
    topk_softmax_kernel[(triton.cdiv(M, block_m), 1, 1)](
        logits, w, ids, M, E, topk, logits.stride(0), logits.stride(1), w.stride(0), ids.stride(0),
        RENORMALIZE=renormalize, BLOCK_E=block_e, BLOCK_M=block_m, num_warps=num_warps)
    return w, ids


def moe_align_block_size(topk_ids, block_size, num_experts, expert_map=None, path="auto",
                         block_t=256, block_eg=32, block_c=32, block_b=None):
    """topk_ids int32 [M, topk] -> (sorted_token_ids, expert_ids, num_tokens_post_padded).

    num_experts counts local experts (ids after expert_map). path: "small"
    (one launch, numel <= 1024), "general" (four launches) or "auto".
    """
    dev = topk_ids.device
    flat = topk_ids.reshape(-1).to(torch.int32).contiguous()
    numel = flat.numel()
    max_padded = numel + num_experts * (block_size - 1)
    num_blocks = triton.cdiv(max_padded, block_size)
    sorted_ids = torch.empty(max_padded, dtype=torch.int32, device=dev)
    expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=dev)
    ntpp = torch.empty(1, dtype=torch.int32, device=dev)
    has_map = expert_map is not None
    emap = expert_map.to(torch.int32).contiguous() if has_map else flat  # dummy when unused
    map_len = emap.numel() if has_map else 0
    block_e = _block_e(num_experts, 16)
    if block_b is None:  # keep the [BLOCK_B, BLOCK_E] expert search tile <= 4K elements
        block_b = max(8, min(128, 4096 // block_e))
    if path == "auto":
        path = "small" if numel <= 1024 else "general"
    if path == "small":
        bt = 64 if numel <= 64 else (256 if numel <= 256 else 1024)
        assert numel <= bt
        moe_align_small_kernel[(1, 1, 1)](
            flat, emap, sorted_ids, expert_ids, ntpp,
            numel, num_experts, block_size, max_padded, num_blocks, map_len,
            HAS_EXPERT_MAP=has_map, BLOCK_E=block_e, BLOCK_T=bt, BLOCK_B=block_b,
            num_warps=8 if bt >= 1024 else 4)
        return sorted_ids, expert_ids, ntpp
    num_chunks = triton.cdiv(numel, block_t)
    chunk_counts = torch.empty(num_chunks * num_experts, dtype=torch.int32, device=dev)
    counts = torch.empty(num_experts, dtype=torch.int32, device=dev)
    starts = torch.empty(num_experts + 1, dtype=torch.int32, device=dev)
    moe_align_count_kernel[(num_chunks, 1, 1)](
        flat, emap, chunk_counts, sorted_ids, numel, num_experts, max_padded, map_len,
        HAS_EXPERT_MAP=has_map, BLOCK_E=block_e, BLOCK_T=block_t)
    moe_align_scan_kernel[(triton.cdiv(num_experts, block_eg), 1, 1)](
        chunk_counts, counts, num_chunks, num_experts, BLOCK_EG=block_eg, BLOCK_C=block_c)
    moe_align_offsets_kernel[(1, 1, 1)](counts, starts, ntpp, num_experts, block_size,
                                        BLOCK_E=block_e)
    moe_align_scatter_kernel[(num_chunks, 1, 1)](
        flat, emap, chunk_counts, starts, sorted_ids, expert_ids,
        numel, num_experts, block_size, num_blocks, map_len,
        HAS_EXPERT_MAP=has_map, BLOCK_E=block_e, BLOCK_T=block_t, BLOCK_B=block_b)
    return sorted_ids, expert_ids, ntpp


def invoke_grouped_gemm(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                        mul_routed_weight=False, quant=QUANT_NONE, a_scale=None, b_scale=None):
    """C[slot] = A[slot // top_k] @ B[e]^T (* topk_weights[slot]).

    a [rows, K], b [E, N, K], c [M*topk, N] (any 2-D view with row = slot).
    quant 1: a_scale fp32 [1], b_scale fp32 [1] or [E]; quant 2: a_scale
    [rows, cdiv(K,128)], b_scale [E, cdiv(N,128), cdiv(K,128)].
    """
    grid, args, kwargs = grouped_gemm_launch(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                                             mul_routed_weight, quant, a_scale, b_scale)
    fused_moe_kernel[grid](*args, **kwargs)
    return c


def grouped_gemm_launch(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                        mul_routed_weight=False, quant=QUANT_NONE, a_scale=None, b_scale=None):
    """(grid, args, kwargs) of invoke_grouped_gemm's launch (the tuner compiles
    configs ahead with fused_moe_kernel.warmup on the same arguments)."""
    E, N, K = b.shape
    assert a.stride(1) == 1 and b.stride(2) == 1 and c.stride(1) == 1, "last dims must be contiguous"
    EM = sorted_ids.numel()
    bm, bn = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"]
    dummy = torch.empty(1, dtype=torch.float32, device=a.device)
    a_s = a_scale if a_scale is not None else dummy
    b_s = b_scale if b_scale is not None else dummy
    if quant == QUANT_FP8_BLOCK:
        sasm, sask = a_s.stride(0), a_s.stride(1)
        sbse, sbsn, sbsk = b_s.stride(0), b_s.stride(1), b_s.stride(2)
    else:
        sasm = sask = sbsn = sbsk = 0
        sbse = 1 if (quant == QUANT_FP8_TENSOR and b_s.numel() == E and E > 1) else 0
    w = topk_weights if topk_weights is not None else dummy
    aligned = all(v % 16 == 0 for v in (K, N, a.stride(0), b.stride(0), b.stride(1), c.stride(0)))
    grid = (triton.cdiv(EM, bm) * triton.cdiv(N, bn), 1, 1)
    args = (a, b, c, a_s, b_s, w, sorted_ids, expert_ids, ntpp, N, K, EM, c.shape[0], top_k,
            a.stride(0), b.stride(0), b.stride(1), c.stride(0), sasm, sask, sbse, sbsn, sbsk, E)
    return grid, args, dict(MUL_ROUTED_WEIGHT=mul_routed_weight, QUANT=quant, ALIGNED=aligned, **config)


def per_token_group_quant_fp8(x, group=128, block_m=None, num_warps=4):
    """x [M, K] -> (q fp8 [M, K], scales fp32 [M, cdiv(K, group)])."""
    M, K = x.shape
    assert x.stride(1) == 1
    if block_m is None:
        block_m = 1 if M <= 64 else 8
    q = torch.empty(M, K, dtype=FP8, device=x.device)
    s = torch.empty(M, triton.cdiv(K, group), dtype=torch.float32, device=x.device)
    aligned = K % 16 == 0 and x.stride(0) % 16 == 0
    per_token_group_quant_fp8_kernel[(triton.cdiv(M, block_m), triton.cdiv(K, group), 1)](
        x, q, s, M, K, x.stride(0), q.stride(0), s.stride(0), s.stride(1),
        GROUP=group, ALIGNED=aligned, BLOCK_M=block_m, num_warps=num_warps)
    return q, s


def per_tensor_quant_fp8(x, scale, block_m=4, block_k=512, num_warps=4):
    """x [M, K], scale fp32 [1] (device) -> q fp8 [M, K]."""
    M, K = x.shape
    assert x.stride(1) == 1
    q = torch.empty(M, K, dtype=FP8, device=x.device)
    aligned = K % 16 == 0 and x.stride(0) % 16 == 0
    per_tensor_quant_fp8_kernel[(triton.cdiv(M, block_m), triton.cdiv(K, block_k), 1)](
        x, q, scale, M, K, x.stride(0), q.stride(0),
        ALIGNED=aligned, BLOCK_M=block_m, BLOCK_K=block_k, num_warps=num_warps)
    return q


def act_and_mul(x, activation=SILU, block=256):
    """[rows, 2N] -> [rows, N]: act(gate) * up (the lead's kernel)."""
    rows, n2 = x.shape
    n = n2 // 2
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    act_and_mul_kernel[(rows, triton.cdiv(n, block), 1)](
        out, x, rows, n, out.stride(0), x.stride(0), ACTIVATION=activation, BLOCK=block)
    return out


def moe_sum(x, block=256):
    """[M, topk, H] -> [M, H] (the lead's kernel)."""
    M, topk, H = x.shape
    out = torch.empty(M, H, dtype=x.dtype, device=x.device)
    moe_sum_kernel[(M, triton.cdiv(H, block), 1)](
        out, x, M, topk, H, out.stride(0), x.stride(0), x.stride(1), BLOCK=block)
    return out


def _quant_act(x, quant, scale):
    """Quantize an activation for GEMM input; returns (q, a_scale)."""
    if quant == QUANT_FP8_BLOCK:
        return per_token_group_quant_fp8(x)
    if quant == QUANT_FP8_TENSOR:
        if scale is None:  # dynamic per-tensor scale, computed on the host side
            scale = (x.abs().amax().float().clamp(min=1e-10) / 448.0).reshape(1)
        return per_tensor_quant_fp8(x, scale), scale
    return x, None


def fused_experts_jit(hidden, w1, w2, topk_weights, topk_ids, expert_map=None, quant=QUANT_NONE,
                      w1_scale=None, w2_scale=None, a1_scale=None, a2_scale=None,
                      config=None, activation=SILU, align_path="auto"):
    """out[m] = sum_k w[m,k] * (act(x W1g^T) * (x W1u^T)) W2^T over the chosen experts.

    hidden [M, H] fp16/bf16; w1 [E, 2N, H] (gate rows, then up rows); w2 [E, H, N];
    topk_weights fp32 [M, topk]; topk_ids int [M, topk] (global ids when
    expert_map maps them to local ones, -1 = not here: contributes zero).
    quant 1/2: w1, w2 fp8 with w1_scale/w2_scale ([1] or [E] / block scales).
    """
    M, H = hidden.shape
    E, N2, _ = w1.shape
    topk = topk_ids.shape[1]
    if config is None:
        aligned = all(v % 16 == 0 for v in (H, N2, hidden.stride(0), w1.stride(0), w1.stride(1)))
        config = default_config(M, quant, aligned)
    config = dict(config)
    sorted_ids, expert_ids, ntpp = moe_align_block_size(
        topk_ids, config["BLOCK_SIZE_M"], E, expert_map, path=align_path)
    weights = topk_weights.to(torch.float32).contiguous()
    cache1 = torch.empty(M * topk, N2, dtype=hidden.dtype, device=hidden.device)
    a1, a1s = _quant_act(hidden, quant, a1_scale)
    invoke_grouped_gemm(a1, w1, cache1, None, sorted_ids, expert_ids, ntpp, topk, config,
                        quant=quant, a_scale=a1s, b_scale=w1_scale)
    act = act_and_mul(cache1, activation)
    a2, a2s = _quant_act(act, quant, a2_scale)
    # Slots skipped by the expert map are never written by the GEMM.
    cache3 = (torch.zeros if expert_map is not None else torch.empty)(
        M * topk, H, dtype=hidden.dtype, device=hidden.device)
    invoke_grouped_gemm(a2, w2, cache3, weights, sorted_ids, expert_ids, ntpp, 1, config,
                        mul_routed_weight=True, quant=quant, a_scale=a2s, b_scale=w2_scale)
    return moe_sum(cache3.view(M, topk, H))
