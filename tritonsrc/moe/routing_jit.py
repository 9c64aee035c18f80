"""Plain-Python JIT launchers of the grouped top-k router and the expert-parallel
dispatch/combine index kernels (CPU interpreter tests, GPU JIT tests, bench).
Launch parameters mirror what the C++ operators pass."""
import torch
import triton

from .configs import topk_default
from .grouped_topk import SIGMOID, SOFTMAX, grouped_topk_kernel

SCORING = {"softmax": SOFTMAX, "sigmoid": SIGMOID}


def grouped_topk(logits, topk, renormalize=False, num_expert_group=1, topk_group=1, scoring_func="softmax",
                 e_score_correction_bias=None, routed_scaling_factor=1.0, block_m=None, num_warps=4,
                 out_weights=None, out_ids=None):
    """logits [M, E] -> (topk_weights fp32 [M, topk], topk_ids int32 [M, topk])."""
    M, E = logits.shape
    block_e = max(8, triton.next_power_of_2(E))
    if block_m is None:
        block_m = topk_default(block_e)["BLOCK_M"]
    w = out_weights if out_weights is not None else torch.empty(M, topk, dtype=torch.float32, device=logits.device)
    ids = out_ids if out_ids is not None else torch.empty(M, topk, dtype=torch.int32, device=logits.device)
    bias = e_score_correction_bias
    has_bias = bias is not None
    if not has_bias:
        bias = w  # never read
    grouped_topk_kernel[(triton.cdiv(M, block_m), 1, 1)](
        logits, bias, w, ids, M, E, topk, num_expert_group, topk_group, SCORING[scoring_func], int(has_bias),
        int(bool(renormalize)), float(routed_scaling_factor), logits.stride(0), logits.stride(1),
        bias.stride(0) if has_bias else 0, w.stride(0), ids.stride(0),
        BLOCK_E=block_e, BLOCK_M=block_m, num_warps=num_warps)
    return w, ids


def ep_dispatch(topk_ids, expert_map, num_local_experts, block_t=256, align_path="auto", outs=None):
    """topk_ids int32 [M, topk] (global ids when expert_map is given) ->
    (sorted_token_ids int32 [numel], inverse int32 [M, topk], expert_offsets int32 [L + 1])."""
    from .ep_dispatch import ep_dispatch_indices_kernel
    from .moe_jit import moe_align_block_size

    flat = topk_ids.reshape(-1).contiguous()
    numel, topk = flat.numel(), topk_ids.shape[-1]
    slots, pos_experts, total = moe_align_block_size(topk_ids, 1, num_local_experts, expert_map, path=align_path)
    if outs is None:
        outs = (torch.empty(numel, dtype=torch.int32, device=flat.device),
                torch.empty(topk_ids.shape, dtype=torch.int32, device=flat.device),
                torch.empty(num_local_experts + 1, dtype=torch.int32, device=flat.device))
    sorted_tokens, inverse, offsets = outs
    has_map = expert_map is not None
    emap = expert_map if has_map else flat
    ep_dispatch_indices_kernel[(max(triton.cdiv(numel, block_t), 1), 1, 1)](
        flat, emap, slots, pos_experts, total, sorted_tokens, inverse, offsets,
        numel, topk, num_local_experts, emap.numel() if has_map else 0,
        HAS_EXPERT_MAP=has_map, BLOCK_T=block_t)
    return sorted_tokens, inverse, offsets
