"""MoE: the eager launches into pyaotriton on real CUDA tensors. Every output
is a caller tensor (the public functions allocate them); a missing workspace
is allocated here, so the traced custom ops never need its size up front.
Each launch re-enters itself under a device guard in the rare case that needs
one (see _glue.eager_stream)."""
import pyaotriton as _C
import torch

from ._glue import _DTYPES, _current_device, _raw_stream, eager_stream, ensure_current_device, opt_view, view

_UINT8 = torch.uint8
_act_and_mul = _C.act_and_mul


def workspace(nbytes, like, ws, name="workspace"):
    """A caller's uint8 workspace (checked) or a fresh one on like's device."""
    if ws is None:
        return like.new_empty((max(nbytes, 1),), dtype=_UINT8)
    if ws.numel() * ws.element_size() < nbytes or not ws.is_contiguous():
        raise ValueError(f"{name} must be a contiguous CUDA buffer of at least {nbytes} bytes")
    return ws


def act_and_mul(out, x, activation, force_config, index):
    # silu_and_mul's host time is a target: eager_stream and view written out;
    # index is x's device, which the caller has read already.
    stream = _raw_stream(index)
    if stream == 0:
        if index != _current_device():
            with torch.cuda.device(index):
                return act_and_mul(out, x, activation, force_config, index)
        ensure_current_device(index)
    code_x, code_out = _DTYPES.get(x.dtype), _DTYPES.get(out.dtype)
    if code_x is None or code_out is None:
        view(x, "input"), view(out, "out")  # raises, naming the tensor
    return _act_and_mul((out.data_ptr(), out.shape, out.stride(), code_out),
                        (x.data_ptr(), x.shape, x.stride(), code_x), activation, stream, force_config)


def topk_softmax(topk_weights, topk_ids, gating_output, renormalize, force_config):
    stream = eager_stream(gating_output)
    if stream is None:
        with torch.cuda.device(gating_output.get_device()):
            return topk_softmax(topk_weights, topk_ids, gating_output, renormalize, force_config)
    return _C.topk_softmax(view(gating_output, "gating_output"), view(topk_weights, "topk_weights"),
                           view(topk_ids, "topk_ids"), renormalize, stream, force_config)


def moe_align_block_size(sorted_ids, expert_ids, ntpp, topk_ids, num_experts, block_size, expert_map, ws):
    ws = workspace(_C.moe_align_workspace_size(topk_ids.numel(), num_experts), topk_ids, ws)
    stream = eager_stream(topk_ids)
    if stream is None:
        with torch.cuda.device(topk_ids.get_device()):
            return moe_align_block_size(sorted_ids, expert_ids, ntpp, topk_ids, num_experts, block_size, expert_map,
                                        ws)
    _C.moe_align_block_size(view(topk_ids, "topk_ids"), num_experts, block_size, opt_view(expert_map, "expert_map"),
                            view(sorted_ids, "sorted_token_ids"), view(expert_ids, "expert_ids"),
                            view(ntpp, "num_tokens_post_padded"), ws.data_ptr(), ws.numel(), stream)


def grouped_gemm(C, A, B, topk_weights, sorted_ids, expert_ids, ntpp, A_scale, B_scale, top_k, block_size,
                 mul_routed_weight, quant, force_config):
    stream = eager_stream(A)
    if stream is None:
        with torch.cuda.device(A.get_device()):
            return grouped_gemm(C, A, B, topk_weights, sorted_ids, expert_ids, ntpp, A_scale, B_scale, top_k,
                                block_size, mul_routed_weight, quant, force_config)
    return _C.grouped_gemm(view(A, "A"), view(B, "B"), view(C, "C"), opt_view(A_scale, "A_scale"),
                           opt_view(B_scale, "B_scale"), opt_view(topk_weights, "topk_weights"),
                           view(sorted_ids, "sorted_token_ids"), view(expert_ids, "expert_ids"),
                           view(ntpp, "num_tokens_post_padded"), top_k, block_size, mul_routed_weight, quant,
                           stream, force_config)


def per_token_group_quant_fp8(q, scales, x, group_size):
    stream = eager_stream(x)
    if stream is None:
        with torch.cuda.device(x.get_device()):
            return per_token_group_quant_fp8(q, scales, x, group_size)
    _C.per_token_group_quant_fp8(view(x, "x"), view(q, "q"), view(scales, "scales"), group_size, stream)


def per_tensor_quant_fp8(q, scale, x, dynamic):
    stream = eager_stream(x)
    if stream is None:
        with torch.cuda.device(x.get_device()):
            return per_tensor_quant_fp8(q, scale, x, dynamic)
    ws = workspace(_C.per_tensor_quant_workspace_size(x.shape[0]) if dynamic else 0, x, None)
    _C.per_tensor_quant_fp8(view(x, "x"), view(q, "q"), view(scale, "scale"), dynamic, ws.data_ptr(), ws.numel(),
                            stream)


def fused_views(out, hidden, w1, w2, topk_weights, topk_ids, activation, quant, w1_scale, w2_scale, a1_scale,
                a2_scale, expert_map):
    """Positional arguments of _C.fused_experts up to expert_map."""
    return (view(hidden, "hidden_states"), view(w1, "w1"), view(w2, "w2"), view(topk_weights, "topk_weights"),
            view(topk_ids, "topk_ids"), view(out, "out"), activation, quant, opt_view(w1_scale, "w1_scale"),
            opt_view(w2_scale, "w2_scale"), opt_view(a1_scale, "a1_scale"), opt_view(a2_scale, "a2_scale"),
            opt_view(expert_map, "expert_map"))


# Workspace bytes per problem class: the size depends only on shapes, dtypes and
# modes, and the query costs a full argument conversion per call.
_ws_bytes = {}


def fused_experts(out, hidden, w1, w2, topk_weights, topk_ids, ws, activation, quant, w1_scale, w2_scale, a1_scale,
                  a2_scale, expert_map, block_size, force_config, apply_router_weight_on_input=False):
    args = fused_views(out, hidden, w1, w2, topk_weights, topk_ids, activation, quant, w1_scale, w2_scale, a1_scale,
                       a2_scale, expert_map)
    key = (args[0][1:], args[1][1:], args[2][1:], args[4][1], activation, quant, block_size, expert_map is None,
           None if w1_scale is None else w1_scale.shape, None if w2_scale is None else w2_scale.shape,
           a1_scale is None, a2_scale is None)
    nbytes = _ws_bytes.get(key)
    if nbytes is None:
        nbytes = _C.fused_experts_workspace_size(*args, block_size)  # also checks every argument
        if len(_ws_bytes) > 4096:
            _ws_bytes.clear()
        _ws_bytes[key] = nbytes
    ws = workspace(nbytes, hidden, ws)
    stream = eager_stream(hidden)
    if stream is None:
        with torch.cuda.device(hidden.get_device()):
            return fused_experts(out, hidden, w1, w2, topk_weights, topk_ids, ws, activation, quant, w1_scale,
                                 w2_scale, a1_scale, a2_scale, expert_map, block_size, force_config,
                                 apply_router_weight_on_input)
    return _C.fused_experts(*args, block_size, ws.data_ptr(), nbytes, stream, force_config,
                            apply_router_weight_on_input)


def grouped_topk(topk_weights, topk_ids, gating_output, bias, num_expert_group, topk_group, scoring, renormalize,
                 routed_scaling_factor, force_config):
    stream = eager_stream(gating_output)
    if stream is None:
        with torch.cuda.device(gating_output.get_device()):
            return grouped_topk(topk_weights, topk_ids, gating_output, bias, num_expert_group, topk_group, scoring,
                                renormalize, routed_scaling_factor, force_config)
    return _C.grouped_topk(view(gating_output, "gating_output"), opt_view(bias, "e_score_correction_bias"),
                           view(topk_weights, "topk_weights"), view(topk_ids, "topk_ids"), num_expert_group,
                           topk_group, scoring, renormalize, routed_scaling_factor, stream, force_config)


def ep_dispatch(sorted_token_ids, inverse, expert_offsets, topk_ids, expert_map, num_local_experts, ws, force_config):
    ws = workspace(_C.ep_dispatch_workspace_size(topk_ids.numel(), num_local_experts), topk_ids, ws)
    stream = eager_stream(topk_ids)
    if stream is None:
        with torch.cuda.device(topk_ids.get_device()):
            return ep_dispatch(sorted_token_ids, inverse, expert_offsets, topk_ids, expert_map, num_local_experts,
                               ws, force_config)
    return _C.ep_dispatch(view(topk_ids, "topk_ids"), opt_view(expert_map, "expert_map"), num_local_experts,
                          view(sorted_token_ids, "sorted_token_ids"), view(inverse, "inverse"),
                          view(expert_offsets, "expert_offsets"), ws.data_ptr(), ws.numel(), stream, force_config)


def fused_experts_backward(dout, hidden, w1, w2, topk_weights, topk_ids, activation, dx, dw1, dw2, dtopk_weights,
                           force_config=None):
    """Writes dx, dw1, dw2, dtopk_weights (the gradients of fused_experts' inputs
    for dout) in a fresh workspace of the size the C++ query returns."""
    args = (view(dout, "grad_output"), view(hidden, "hidden_states"), view(w1, "w1"), view(w2, "w2"),
            view(topk_weights, "topk_weights"), view(topk_ids, "topk_ids"), activation,
            view(dx, "grad_hidden_states"), view(dw1, "grad_w1"), view(dw2, "grad_w2"),
            view(dtopk_weights, "grad_topk_weights"))
    nbytes = _C.fused_experts_backward_workspace_size(*args)  # also checks every argument
    ws = workspace(nbytes, hidden, None)
    stream = eager_stream(hidden)
    if stream is None:
        with torch.cuda.device(hidden.get_device()):
            return _C.fused_experts_backward(*args, ws.data_ptr(), nbytes, _raw_stream(hidden.get_device()),
                                             force_config)
    return _C.fused_experts_backward(*args, ws.data_ptr(), nbytes, stream, force_config)
