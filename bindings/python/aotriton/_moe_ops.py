"""MoE operators as torch custom ops (torch.ops.aotriton.*). Each writes into
caller tensors declared in mutates_args and returns nothing, so torch.compile
functionalizes them and the public functions allocate the outputs (traced
too). Fake implementations check what can be checked from metadata.

  act_and_mul(out!, x, activation, force_config?)
  topk_softmax(topk_weights!, topk_ids!, gating_output, renormalize, force_config?)
  moe_align_block_size(sorted_token_ids!, expert_ids!, num_tokens_post_padded!, topk_ids, num_experts,
                       block_size, expert_map?, workspace!?)
  grouped_gemm(C!, A, B, topk_weights?, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale?,
               B_scale?, top_k, block_size, mul_routed_weight, quant, force_config?)
  per_token_group_quant_fp8(q!, scales!, x, group_size)
  per_tensor_quant_fp8(q!, scale!, x, dynamic)
  fused_experts(out!, hidden_states, w1, w2, topk_weights, topk_ids, workspace!?, activation, quant,
                w1_scale?, w2_scale?, a1_scale?, a2_scale?, expert_map?, block_size, force_config?,
                apply_router_weight_on_input=False)
  grouped_topk(topk_weights!, topk_ids!, gating_output, e_score_correction_bias?, num_expert_group,
               topk_group, scoring, renormalize, routed_scaling_factor, force_config?)
  ep_dispatch(sorted_token_ids!, inverse!, expert_offsets!, topk_ids, expert_map?, num_local_experts,
              workspace!?, force_config?)
"""
from typing import Optional

import torch
from torch import Tensor

from . import _moe_launch as L

_lib = torch.library


def _expect_shape(t, shape, name):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


@_lib.custom_op("aotriton::act_and_mul", mutates_args=("out",))
def act_and_mul(out: Tensor, x: Tensor, activation: int, force_config: Optional[str]) -> None:
    L.act_and_mul(out, x, activation, force_config, x.get_device())


@act_and_mul.register_fake
def _(out, x, activation, force_config):
    _expect_shape(out, (x.shape[0], x.shape[1] // 2), "out")


@_lib.custom_op("aotriton::topk_softmax", mutates_args=("topk_weights", "topk_ids"))
def topk_softmax(topk_weights: Tensor, topk_ids: Tensor, gating_output: Tensor, renormalize: bool,
                 force_config: Optional[str]) -> None:
    L.topk_softmax(topk_weights, topk_ids, gating_output, renormalize, force_config)


@topk_softmax.register_fake
def _(topk_weights, topk_ids, gating_output, renormalize, force_config):
    _expect_shape(topk_ids, topk_weights.shape, "topk_ids")


@_lib.custom_op("aotriton::moe_align_block_size",
                mutates_args=("sorted_token_ids", "expert_ids", "num_tokens_post_padded", "workspace"))
def moe_align_block_size(sorted_token_ids: Tensor, expert_ids: Tensor, num_tokens_post_padded: Tensor,
                         topk_ids: Tensor, num_experts: int, block_size: int, expert_map: Optional[Tensor],
                         workspace: Optional[Tensor]) -> None:
    L.moe_align_block_size(sorted_token_ids, expert_ids, num_tokens_post_padded, topk_ids, num_experts, block_size,
                           expert_map, workspace)


@moe_align_block_size.register_fake
def _(sorted_token_ids, expert_ids, num_tokens_post_padded, topk_ids, num_experts, block_size, expert_map, workspace):
    return None


@_lib.custom_op("aotriton::grouped_gemm", mutates_args=("C",))
def grouped_gemm(C: Tensor, A: Tensor, B: Tensor, topk_weights: Optional[Tensor], sorted_token_ids: Tensor,
                 expert_ids: Tensor, num_tokens_post_padded: Tensor, A_scale: Optional[Tensor],
                 B_scale: Optional[Tensor], top_k: int, block_size: int, mul_routed_weight: bool, quant: int,
                 force_config: Optional[str]) -> None:
    L.grouped_gemm(C, A, B, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale,
                   top_k, block_size, mul_routed_weight, quant, force_config)


@grouped_gemm.register_fake
def _(C, A, B, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale, top_k,
      block_size, mul_routed_weight, quant, force_config):
    if C.shape[1] != B.shape[1]:
        raise ValueError(f"C must have N = B.shape[1] = {B.shape[1]} columns, got {C.shape[1]}")


@_lib.custom_op("aotriton::per_token_group_quant_fp8", mutates_args=("q", "scales"))
def per_token_group_quant_fp8(q: Tensor, scales: Tensor, x: Tensor, group_size: int) -> None:
    L.per_token_group_quant_fp8(q, scales, x, group_size)


@per_token_group_quant_fp8.register_fake
def _(q, scales, x, group_size):
    _expect_shape(q, x.shape, "q")


@_lib.custom_op("aotriton::per_tensor_quant_fp8", mutates_args=("q", "scale"))
def per_tensor_quant_fp8(q: Tensor, scale: Tensor, x: Tensor, dynamic: bool) -> None:
    L.per_tensor_quant_fp8(q, scale, x, dynamic)


@per_tensor_quant_fp8.register_fake
def _(q, scale, x, dynamic):
    _expect_shape(q, x.shape, "q")


@_lib.custom_op("aotriton::fused_experts", mutates_args=("out", "workspace"))
def fused_experts(out: Tensor, hidden_states: Tensor, w1: Tensor, w2: Tensor, topk_weights: Tensor, topk_ids: Tensor,
                  workspace: Optional[Tensor], activation: int, quant: int, w1_scale: Optional[Tensor],
                  w2_scale: Optional[Tensor], a1_scale: Optional[Tensor], a2_scale: Optional[Tensor],
                  expert_map: Optional[Tensor], block_size: int, force_config: Optional[str],
                  apply_router_weight_on_input: bool = False) -> None:
    L.fused_experts(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale,
                    w2_scale, a1_scale, a2_scale, expert_map, block_size, force_config, apply_router_weight_on_input)


@fused_experts.register_fake
def _(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale, w2_scale, a1_scale,
      a2_scale, expert_map, block_size, force_config, apply_router_weight_on_input=False):
    _expect_shape(out, hidden_states.shape, "out")
    _expect_shape(topk_ids, topk_weights.shape, "topk_ids")


@_lib.custom_op("aotriton::grouped_topk", mutates_args=("topk_weights", "topk_ids"))
def grouped_topk(topk_weights: Tensor, topk_ids: Tensor, gating_output: Tensor, e_score_correction_bias: Optional[Tensor],
                 num_expert_group: int, topk_group: int, scoring: int, renormalize: bool, routed_scaling_factor: float,
                 force_config: Optional[str]) -> None:
    L.grouped_topk(topk_weights, topk_ids, gating_output, e_score_correction_bias, num_expert_group, topk_group,
                   scoring, renormalize, routed_scaling_factor, force_config)


@grouped_topk.register_fake
def _(topk_weights, topk_ids, gating_output, e_score_correction_bias, num_expert_group, topk_group, scoring,
      renormalize, routed_scaling_factor, force_config):
    _expect_shape(topk_ids, topk_weights.shape, "topk_ids")
    if topk_weights.shape[0] != gating_output.shape[0]:
        raise ValueError(f"topk_weights must have {gating_output.shape[0]} rows, got {topk_weights.shape[0]}")


@_lib.custom_op("aotriton::ep_dispatch", mutates_args=("sorted_token_ids", "inverse", "expert_offsets", "workspace"))
def ep_dispatch(sorted_token_ids: Tensor, inverse: Tensor, expert_offsets: Tensor, topk_ids: Tensor,
                expert_map: Optional[Tensor], num_local_experts: int, workspace: Optional[Tensor],
                force_config: Optional[str]) -> None:
    L.ep_dispatch(sorted_token_ids, inverse, expert_offsets, topk_ids, expert_map, num_local_experts, workspace,
                  force_config)


@ep_dispatch.register_fake
def _(sorted_token_ids, inverse, expert_offsets, topk_ids, expert_map, num_local_experts, workspace, force_config):
    _expect_shape(inverse, topk_ids.shape, "inverse")
    _expect_shape(sorted_token_ids, (topk_ids.numel(),), "sorted_token_ids")
    _expect_shape(expert_offsets, (num_local_experts + 1,), "expert_offsets")

# ---------------------------------------------------------------------------
# Training: a functional fused_experts with autograd. The op above mutates its
# out/workspace arguments, and torch.library's autograd registration takes
# functional ops only; so the differentiable path is its own op returning out.
#   fused_experts_train(hidden_states, w1, w2, topk_weights, topk_ids, activation) -> out
#   fused_experts_backward(grad_output, hidden_states, w1, w2, topk_weights, topk_ids, activation)
#       -> (grad_hidden_states, grad_w1, grad_w2, grad_topk_weights)
# fp16/bf16, no expert map, no fp8 (moe.fused_experts refuses those with grad).
# ---------------------------------------------------------------------------
@_lib.custom_op("aotriton::fused_experts_train", mutates_args=())
def fused_experts_train(hidden_states: Tensor, w1: Tensor, w2: Tensor, topk_weights: Tensor, topk_ids: Tensor,
                        activation: int) -> Tensor:
    out = torch.empty_like(hidden_states, memory_format=torch.contiguous_format)
    if hidden_states.shape[0] > 0:
        L.fused_experts(out, hidden_states, w1, w2, topk_weights, topk_ids, None, activation, 0, None, None, None,
                        None, None, 0, None)
    return out


@fused_experts_train.register_fake
def _(hidden_states, w1, w2, topk_weights, topk_ids, activation):
    _expect_shape(topk_ids, topk_weights.shape, "topk_ids")
    return torch.empty_like(hidden_states, memory_format=torch.contiguous_format)


@_lib.custom_op("aotriton::fused_experts_backward", mutates_args=())
def fused_experts_backward(grad_output: Tensor, hidden_states: Tensor, w1: Tensor, w2: Tensor, topk_weights: Tensor,
                           topk_ids: Tensor, activation: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dx = torch.empty_like(hidden_states, memory_format=torch.contiguous_format)
    dw1 = torch.empty_like(w1, memory_format=torch.contiguous_format)
    dw2 = torch.empty_like(w2, memory_format=torch.contiguous_format)
    dtw = torch.empty(topk_weights.shape, dtype=torch.float32, device=topk_weights.device)
    if hidden_states.shape[0] == 0:  # no tokens: every gradient is zero
        return dx.zero_(), dw1.zero_(), dw2.zero_(), dtw
    L.fused_experts_backward(grad_output, hidden_states, w1, w2, topk_weights, topk_ids, activation, dx, dw1, dw2,
                             dtw)
    return dx, dw1, dw2, dtw


@fused_experts_backward.register_fake
def _(grad_output, hidden_states, w1, w2, topk_weights, topk_ids, activation):
    _expect_shape(grad_output, hidden_states.shape, "grad_output")
    return (torch.empty_like(hidden_states, memory_format=torch.contiguous_format),
            torch.empty_like(w1, memory_format=torch.contiguous_format),
            torch.empty_like(w2, memory_format=torch.contiguous_format),
            topk_weights.new_empty(topk_weights.shape, dtype=torch.float32))


def _train_setup_context(ctx, inputs, output):
    hidden_states, w1, w2, topk_weights, topk_ids, activation = inputs
    ctx.save_for_backward(hidden_states, w1, w2, topk_weights, topk_ids)
    ctx.activation = activation


def _train_backward(ctx, grad_out):
    hidden_states, w1, w2, topk_weights, topk_ids = ctx.saved_tensors
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    dx, dw1, dw2, dtw = torch.ops.aotriton.fused_experts_backward(grad_out, hidden_states, w1, w2, topk_weights,
                                                                 topk_ids, ctx.activation)
    return dx, dw1, dw2, dtw, None, None


fused_experts_train.register_autograd(_train_backward, setup_context=_train_setup_context)
