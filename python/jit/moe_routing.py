"""Plain-Python JIT launchers of the grouped top-k router and the expert-parallel
dispatch/combine index kernels (CPU interpreter tests, GPU JIT tests, bench).
The calls (argument order, strides, grids) come from the rules
(python/rules_moe.py) through python/jit_launch.py, as in the AOT build."""
import torch
import triton

from python import rules_moe as R
from python.jit_launch import View, launch

from tritonsrc.moe.configs import topk_default
from tritonsrc.moe.grouped_topk import SIGMOID, SOFTMAX

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
    launch(R.grouped_topk, dict(
        logits_ptr=View(logits, m=0, e=1), bias_ptr=View(bias, b=0 if has_bias else None),
        topk_weights_ptr=View(w, m=0), topk_ids_ptr=View(ids, m=0), num_tokens=M, num_experts=E, topk=topk,
        num_groups=num_expert_group, topk_group=topk_group, scoring=SCORING[scoring_func], has_bias=int(has_bias),
        renormalize=int(bool(renormalize)), routed_scaling_factor=float(routed_scaling_factor),
    ), dict(BLOCK_E=block_e), dict(BLOCK_M=block_m, num_warps=num_warps))
    return w, ids


def ep_dispatch(topk_ids, expert_map, num_local_experts, block_t=256, align_path="auto", outs=None):
    """topk_ids int32 [M, topk] (global ids when expert_map is given) ->
    (sorted_token_ids int32 [numel], inverse int32 [M, topk], expert_offsets int32 [L + 1])."""
    from python.jit.moe import moe_align_block_size

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
    launch(R.ep_dispatch_indices, dict(
        topk_ids_ptr=flat, expert_map_ptr=emap, sorted_slots_ptr=slots, position_experts_ptr=pos_experts,
        total_ptr=total, sorted_token_ids_ptr=sorted_tokens, inverse_ptr=inverse, expert_offsets_ptr=offsets,
        numel=numel, topk=topk, num_local_experts=num_local_experts, expert_map_len=emap.numel() if has_map else 0,
    ), dict(HAS_EXPERT_MAP=has_map), dict(BLOCK_T=block_t))
    return sorted_tokens, inverse, offsets
