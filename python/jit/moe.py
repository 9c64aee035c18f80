"""Plain-Python JIT launchers of the MoE kernels on torch tensors, and a
`fused_experts_jit` composition (the vLLM fused_experts flow).

Used by the CPU interpreter tests, the GPU JIT tests and the JIT-vs-AOT
benchmark. Each launch's argument order, strides and grid come from the rule
(python/rules_moe.py) through python/jit_launch.py, as in the AOT build.
"""
import torch
import triton

from python import rules_moe as R
from python.jit_launch import View, grid_of, launch, positional_args

from tritonsrc.moe.activation import SILU, GELU  # noqa: F401
# Config tables live in tritonsrc/moe/configs.py (shared with the AOT rules); re-exported here.
from tritonsrc.moe.configs import (DEFAULT_CONFIGS, QUANT_FP8_BLOCK, QUANT_FP8_TENSOR, QUANT_NONE,  # noqa: F401
                                   SWEEP_CANDIDATES, default_config)
from tritonsrc.moe.grouped_gemm import fused_moe_kernel

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
    launch(R.topk_softmax, dict(
        logits_ptr=View(logits, m=0, e=1), topk_weights_ptr=View(w, m=0), topk_ids_ptr=View(ids, m=0),
        num_tokens=M, num_experts=E, topk=topk,
    ), dict(RENORMALIZE=renormalize, BLOCK_E=block_e), dict(BLOCK_M=block_m, num_warps=num_warps))
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
    ids = dict(topk_ids_ptr=flat, expert_map_ptr=emap, numel=numel, num_experts=num_experts,
               expert_map_len=map_len)
    mapped = dict(HAS_EXPERT_MAP=has_map, BLOCK_E=block_e)
    if path == "small":
        bt = 64 if numel <= 64 else (256 if numel <= 256 else 1024)
        assert numel <= bt
        launch(R.moe_align_small, dict(
            ids, sorted_token_ids_ptr=sorted_ids, expert_ids_ptr=expert_ids, num_tokens_post_padded_ptr=ntpp,
            block_size=block_size, max_num_tokens_padded=max_padded, num_blocks_total=num_blocks,
        ), dict(mapped, BLOCK_T=bt), dict(BLOCK_B=block_b, num_warps=8 if bt >= 1024 else 4))
        return sorted_ids, expert_ids, ntpp
    num_chunks = triton.cdiv(numel, block_t)
    chunk_counts = torch.empty(num_chunks * num_experts, dtype=torch.int32, device=dev)
    counts = torch.empty(num_experts, dtype=torch.int32, device=dev)
    starts = torch.empty(num_experts + 1, dtype=torch.int32, device=dev)
    launch(R.moe_align_count, dict(ids, chunk_counts_ptr=chunk_counts, sorted_token_ids_ptr=sorted_ids,
                                   max_num_tokens_padded=max_padded),
           dict(mapped, BLOCK_T=block_t), {})
    launch(R.moe_align_scan, dict(chunk_counts_ptr=chunk_counts, expert_counts_ptr=counts, num_chunks=num_chunks,
                                  num_experts=num_experts),
           {}, dict(BLOCK_EG=block_eg, BLOCK_C=block_c))
    launch(R.moe_align_offsets, dict(expert_counts_ptr=counts, expert_starts_ptr=starts,
                                     num_tokens_post_padded_ptr=ntpp, num_experts=num_experts,
                                     block_size=block_size),
           dict(BLOCK_E=block_e), {})
    launch(R.moe_align_scatter, dict(ids, chunk_counts_ptr=chunk_counts, expert_starts_ptr=starts,
                                     sorted_token_ids_ptr=sorted_ids, expert_ids_ptr=expert_ids,
                                     block_size=block_size, num_blocks_total=num_blocks),
           dict(mapped, BLOCK_T=block_t), dict(BLOCK_B=block_b))
    return sorted_ids, expert_ids, ntpp


def invoke_grouped_gemm(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                        mul_routed_weight=False, quant=QUANT_NONE, a_scale=None, b_scale=None):
    """C[slot] = A[slot // top_k] @ B[e]^T (* topk_weights[slot]).

    a [rows, K], b [E, N, K], c [M*topk, N] (any 2-D view with row = slot).
    quant 1: a_scale fp32 [1], b_scale fp32 [1] or [E]; quant 2: a_scale
    [rows, cdiv(K,128)], b_scale [E, cdiv(N,128), cdiv(K,128)].
    config["SPLIT_K"] > 1: c is [slots * SPLIT_K, N], partial row slot * SPLIT_K + s.
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
    dummy = torch.empty(1, dtype=torch.float32, device=a.device)
    a_s = a_scale if a_scale is not None else dummy
    b_s = b_scale if b_scale is not None else dummy
    if quant == QUANT_FP8_BLOCK:
        a_sv, b_sv = View(a_s, m=0, k=1), View(b_s, e=0, n=1, k=2)
    else:  # per-tensor: one scale, or one per expert ([E], e stride 1)
        a_sv = View(a_s, m=None, k=None)
        per_expert = quant == QUANT_FP8_TENSOR and b_s.numel() == E and E > 1
        b_sv = View(b_s, e=0 if per_expert else None, n=None, k=None)
    w = topk_weights if topk_weights is not None else dummy
    aligned = all(v % 16 == 0 for v in (K, N, a.stride(0), b.stride(0), b.stride(1), c.stride(0)))
    config = {"SPLIT_K": 1, **config}
    assert c.shape[0] % config["SPLIT_K"] == 0
    rule = R.fused_moe_gemm
    args = positional_args(rule, dict(
        a_ptr=View(a, m=0), b_ptr=View(b, e=0, n=1), c_ptr=View(c, m=0), a_scale_ptr=a_sv, b_scale_ptr=b_sv,
        topk_weights_ptr=w, sorted_token_ids_ptr=sorted_ids, expert_ids_ptr=expert_ids,
        num_tokens_post_padded_ptr=ntpp, N=N, K=K, EM=EM, num_valid_tokens=c.shape[0] // config["SPLIT_K"],
        top_k=top_k, num_experts=E))
    kwargs = dict(MUL_ROUTED_WEIGHT=mul_routed_weight, QUANT=quant, ALIGNED=aligned, **config)
    grid = grid_of(rule, dict(N=N, EM=EM, **kwargs))
    return grid, args, kwargs


def per_token_group_quant_fp8(x, group=128, block_m=None, num_warps=4):
    """x [M, K] -> (q fp8 [M, K], scales fp32 [M, cdiv(K, group)])."""
    M, K = x.shape
    assert x.stride(1) == 1
    if block_m is None:
        block_m = 1 if M <= 64 else 8
    q = torch.empty(M, K, dtype=FP8, device=x.device)
    s = torch.empty(M, triton.cdiv(K, group), dtype=torch.float32, device=x.device)
    aligned = K % 16 == 0 and x.stride(0) % 16 == 0
    launch(R.per_token_group_quant_fp8,
           dict(x_ptr=View(x, m=0), q_ptr=View(q, m=0), s_ptr=View(s, m=0, k=1), M=M, K=K),
           dict(GROUP=group, ALIGNED=aligned), dict(BLOCK_M=block_m, num_warps=num_warps))
    return q, s


def per_tensor_quant_fp8(x, scale, block_m=4, block_k=512, num_warps=4):
    """x [M, K], scale fp32 [1] (device) -> q fp8 [M, K]."""
    M, K = x.shape
    assert x.stride(1) == 1
    q = torch.empty(M, K, dtype=FP8, device=x.device)
    aligned = K % 16 == 0 and x.stride(0) % 16 == 0
    launch(R.per_tensor_quant_fp8, dict(x_ptr=View(x, m=0), q_ptr=View(q, m=0), scale_ptr=scale, M=M, K=K),
           dict(ALIGNED=aligned), dict(BLOCK_M=block_m, BLOCK_K=block_k, num_warps=num_warps))
    return q


def act_and_mul(x, activation=SILU, block=256):
    """[rows, 2N] -> [rows, N]: act(gate) * up (the lead's kernel)."""
    rows, n2 = x.shape
    n = n2 // 2
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    launch(R.act_and_mul, dict(out_ptr=View(out, row=0), in_ptr=View(x, row=0), n_rows=rows, n_cols=n),
           dict(ACTIVATION=activation), dict(BLOCK=block))
    return out


def moe_sum(x, block=256):
    """[M, topk, H] -> [M, H] (the lead's kernel)."""
    M, topk, H = x.shape
    out = torch.empty(M, H, dtype=x.dtype, device=x.device)
    no_ids = torch.zeros(1, dtype=torch.int32, device=x.device)  # rows_per_slot 0: every row summed, ids unread
    launch(R.moe_sum, dict(out_ptr=View(out, m=0), in_ptr=View(x, m=0, k=1), topk_ids_ptr=no_ids, expert_map_ptr=no_ids,
                           n_tokens=M, topk=topk, hidden=H, rows_per_slot=0, num_experts=1, expert_map_len=0),
           {}, dict(R.moe_sum.tuning.default({}, 90), BLOCK=block))
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
