"""MoE operators as torch custom ops (torch.ops.aotriton.*). Each writes into
caller tensors declared in mutates_args and returns nothing, so torch.compile
functionalizes them and the public functions allocate the outputs (traced
too). Fake implementations check what can be checked from metadata.

  act_and_mul(out!, x, activation, force_config?)
  moe_sum(out!, x, force_config?)
  topk_softmax(topk_weights!, topk_ids!, gating_output, renormalize, force_config?)
  moe_align_block_size(sorted_token_ids!, expert_ids!, num_tokens_post_padded!, topk_ids, num_experts,
                       block_size, expert_map?, workspace!?)
  grouped_gemm(C!, A, B, topk_weights?, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale?,
               B_scale?, top_k, block_size, mul_routed_weight, quant, force_config?)
  per_token_group_quant_fp8(q!, scales!, x, group_size)
  per_tensor_quant_fp8(q!, scale!, x, dynamic)
  fused_experts(out!, hidden_states, w1, w2, topk_weights, topk_ids, workspace!?, activation, quant,
                w1_scale?, w2_scale?, a1_scale?, a2_scale?, expert_map?, block_size, force_config?)
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


@_lib.custom_op("aotriton::moe_sum", mutates_args=("out",))
def moe_sum(out: Tensor, x: Tensor, force_config: Optional[str]) -> None:
    L.moe_sum(out, x, force_config)


@moe_sum.register_fake
def _(out, x, force_config):
    _expect_shape(out, (x.shape[0], x.shape[2]), "out")


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
                  expert_map: Optional[Tensor], block_size: int, force_config: Optional[str]) -> None:
    L.fused_experts(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale,
                    w2_scale, a1_scale, a2_scale, expert_map, block_size, force_config)


@fused_experts.register_fake
def _(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale, w2_scale, a1_scale,
      a2_scale, expert_map, block_size, force_config):
    _expect_shape(out, hidden_states.shape, "out")
    _expect_shape(topk_ids, topk_weights.shape, "topk_ids")
