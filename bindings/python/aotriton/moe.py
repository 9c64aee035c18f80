"""Mixture-of-experts operators on torch tensors, with vLLM's signatures.

The public functions check and allocate, then launch directly (eager) or
through the torch.ops.aotriton custom ops (traced: torch.compile, export,
fake tensors); see _moe_ops.py.
"""
import pyaotriton as _C
import torch

from . import _moe_launch as L
from . import _moe_ops  # noqa: F401  (registers torch.ops.aotriton.*)
from . import _moe_quant
from ._moe_quant import (QUANT_FP8_CHANNEL, QUANT_INT4_W4A16, QUANT_INT8_W8A16,  # noqa: F401
                         invoke_grouped_gemm_quant, per_token_quant_fp8)
from ._simple_op import simple_op
from . import _torch_fast
from ._glue import _PLAIN, _dispatch_modes, _is_compiling, check_cuda, check_rank, check_same_device, traced

SILU, GELU, GELU_TANH, SWIGLU_OAI = 0, 1, 2, 3
QUANT_NONE, QUANT_FP8_TENSOR, QUANT_FP8_BLOCK = 0, 1, 2
# "swiglu" is silu(gate) * up; "swigluoai" is gpt-oss's clamped SwiGLU on interleaved
# gate/up columns (alpha 1.702, limit 7.0: see swigluoai_and_mul).
_ACTIVATIONS = {"silu": SILU, "swiglu": SILU, "gelu": GELU, "gelu_tanh": GELU_TANH, "swigluoai": SWIGLU_OAI}
_FP8, _FP32, _INT32 = torch.float8_e4m3fn, torch.float32, torch.int32
_TENSOR, _PARAMETER = torch.Tensor, torch.nn.Parameter
_ops = torch.ops.aotriton
_grad_enabled = torch.is_grad_enabled


def _same_device(*named):
    """named: name, tensor, name, tensor... (tensors may be None): all on one
    CUDA device, else the error names them. Fast when all agree."""
    try:
        d = named[1].get_device()
        if d >= 0:
            for t in named[3::2]:
                if t is not None and t.get_device() != d:
                    break
            else:
                return
    except AttributeError:
        pass
    check_same_device(zip(named[0::2], named[1::2]))


def _not_differentiable(op, *tensors):
    """The MoE operators have no backward: refuse rather than return an output without a gradient."""
    if _grad_enabled():
        for t in tensors:
            if t is not None and t.requires_grad:
                raise NotImplementedError(f"aotriton {op} has no backward: call it under torch.no_grad() / "
                                          f"torch.inference_mode(), or on tensors that do not require grad")


# ---------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------
def _act_and_mul(x, activation, out, force_config):
    # The plain case in C++ when the torch fast path is loaded, else in one
    # expression (silu_and_mul's host time is a target); anything else takes
    # the checks that name the problem.
    fast = _torch_fast.act_and_mul_plain
    if fast is not None and force_config is None and not _is_compiling():
        got = fast(x, out, activation)
        if got is not NotImplemented:
            return got
    try:
        d = x.get_device()
        plain = d >= 0 and x.dim() == 2 and not x.requires_grad and (out is None or out.get_device() == d)
    except AttributeError:
        plain = False
    if not plain:
        _same_device("input", x, "out", out)
        check_rank(x, 2, "input", "[tokens, 2 * N]")
        _not_differentiable("act_and_mul", x)
    if out is None:
        M, N2 = x.shape
        out = x.new_empty(M, N2 // 2)
    tx = type(x)  # traced(x), inline: identity tests are cheaper than a tuple search
    if _is_compiling() or (tx is not _TENSOR and tx is not _PARAMETER) or _dispatch_modes():
        _ops.act_and_mul(out, x, activation, force_config)
    else:
        L.act_and_mul(out, x, activation, force_config, d if plain else x.get_device())
    return out


def silu_and_mul(x: torch.Tensor, out=None, *, force_config=None) -> torch.Tensor:
    """silu(x[:, :N]) * x[:, N:] for x of shape [M, 2N]."""
    return _act_and_mul(x, SILU, out, force_config)


def gelu_and_mul(x: torch.Tensor, out=None, *, approximate: str = "none", force_config=None) -> torch.Tensor:
    """gelu(x[:, :N]) * x[:, N:]; approximate="tanh" for the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act_and_mul(x, GELU if approximate == "none" else GELU_TANH, out, force_config)


def swigluoai_and_mul(x: torch.Tensor, out=None, *, alpha: float = 1.702, limit: float = 7.0,
                      force_config=None) -> torch.Tensor:
    """gpt-oss's clamped SwiGLU (vLLM's swigluoai_and_mul) on x [M, 2N] with interleaved
    columns gate = x[:, 0::2], up = x[:, 1::2]: g = gate.clamp(max=limit),
    u = up.clamp(-limit, limit), out = g * sigmoid(alpha * g) * (u + 1). The compiled
    kernel has gpt-oss's alpha = 1.702 and limit = 7.0; other values raise."""
    if alpha != 1.702 or limit != 7.0:
        raise ValueError(f"swigluoai_and_mul supports gpt-oss's alpha=1.702, limit=7.0 only, got alpha={alpha}, "
                         f"limit={limit}")
    return _act_and_mul(x, SWIGLU_OAI, out, force_config)


moe_sum = simple_op("moe_sum", {"out": lambda x: x.new_empty((x.shape[0], x.shape[2]))},
                    doc="Sum over the top-k axis: x [M, topk, H] -> out [M, H].")


# ---------------------------------------------------------------------------
# Routing, alignment, grouped GEMM, fp8 quantization
# ---------------------------------------------------------------------------
def topk_softmax(gating_output, topk, renormalize=False, *, topk_weights=None, topk_ids=None, force_config=None):
    """Router: softmax over experts then top-k. gating_output [M, E] fp16/bf16/fp32 ->
    (topk_weights fp32 [M, topk], topk_ids int32 [M, topk])."""
    _same_device("gating_output", gating_output, "topk_weights", topk_weights, "topk_ids", topk_ids)
    check_rank(gating_output, 2, "gating_output", "[tokens, experts]")
    _not_differentiable("topk_softmax", gating_output)
    M = gating_output.shape[0]
    if topk_weights is None:
        topk_weights = gating_output.new_empty((M, topk), dtype=_FP32)
    if topk_ids is None:
        topk_ids = gating_output.new_empty((M, topk), dtype=_INT32)
    if traced(gating_output):
        _ops.topk_softmax(topk_weights, topk_ids, gating_output, bool(renormalize), force_config)
    else:
        L.topk_softmax(topk_weights, topk_ids, gating_output, bool(renormalize), force_config)
    return topk_weights, topk_ids


_SCORING = {"softmax": 0, "sigmoid": 1}


def _grouped_args(gating_output, topk, num_expert_group, topk_group, scoring_func, bias):
    """Checked (groups, topk_group, scoring code, bias) of the grouped router."""
    check_rank(gating_output, 2, "gating_output", "[tokens, experts]")
    if scoring_func not in _SCORING:
        raise ValueError(f"scoring_func must be 'softmax' or 'sigmoid', got {scoring_func!r}")
    E = gating_output.shape[1]
    G = int(num_expert_group or 1)
    TG = int(topk_group or G)
    if G < 1 or E % G:
        raise ValueError(f"num_expert_group={G} must divide the number of experts {E}")
    if not 1 <= TG <= G:
        raise ValueError(f"topk_group={TG} must be in [1, num_expert_group={G}]")
    if not 1 <= topk <= TG * (E // G):
        raise ValueError(f"topk={topk} must be in [1, {TG * (E // G)}]: the experts of the topk_group={TG} kept "
                         f"groups ({E // G} per group)")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != E:
            raise ValueError(f"e_score_correction_bias must have shape ({E},) (one per expert), got "
                             f"{tuple(bias.shape)}")
        if bias.dtype != _FP32:
            bias = bias.to(_FP32)
    return G, TG, _SCORING[scoring_func], bias


def grouped_topk(hidden_states, gating_output, topk, renormalize, num_expert_group=0, topk_group=0,
                 scoring_func="softmax", routed_scaling_factor=1.0, e_score_correction_bias=None, *,
                 topk_weights=None, topk_ids=None, force_config=None):
    """vLLM's grouped_topk (DeepSeek-V2/V3 routing) in one launch.

    scores = softmax or sigmoid(gating_output [M, E]); the E experts form num_expert_group
    groups, the topk_group best groups are kept (group score: best expert, or with
    e_score_correction_bias [E] the sum of the two best biased scores) and the topk best
    experts inside them chosen by score + bias. Weights are the unbiased scores,
    renormalized to sum 1 when asked, times routed_scaling_factor.
    num_expert_group / topk_group 0 or None: one group (plain top-k).
    hidden_states is only checked for the token count (vLLM's signature).
    Returns (topk_weights fp32 [M, topk], topk_ids int32 [M, topk]).
    """
    _same_device("gating_output", gating_output, "e_score_correction_bias", e_score_correction_bias,
                 "topk_weights", topk_weights, "topk_ids", topk_ids)
    _not_differentiable("grouped_topk", gating_output)
    topk = int(topk)
    G, TG, scoring, bias = _grouped_args(gating_output, topk, num_expert_group, topk_group, scoring_func,
                                         e_score_correction_bias)
    M = gating_output.shape[0]
    if hidden_states is not None and hidden_states.shape[0] != M:
        raise ValueError(f"hidden_states has {hidden_states.shape[0]} tokens but gating_output has {M}")
    if topk_weights is None:
        topk_weights = gating_output.new_empty((M, topk), dtype=_FP32)
    if topk_ids is None:
        topk_ids = gating_output.new_empty((M, topk), dtype=_INT32)
    args = (topk_weights, topk_ids, gating_output, bias, G, TG, scoring, bool(renormalize),
            float(routed_scaling_factor), force_config)
    if traced(gating_output):
        _ops.grouped_topk(*args)
    else:
        L.grouped_topk(*args)
    return topk_weights, topk_ids


def fused_topk(hidden_states, gating_output, topk, renormalize, indices_type=None, scoring_func="softmax"):
    """vLLM's fused_topk: softmax or sigmoid scores, top-k. Returns (weights fp32, ids int32)."""
    if scoring_func == "softmax":
        w, ids = topk_softmax(gating_output, int(topk), renormalize)
    else:
        w, ids = grouped_topk(hidden_states, gating_output, topk, renormalize, 1, 1, scoring_func)
    return w, (ids if indices_type in (None, _INT32) else ids.to(indices_type))


def moe_gemm_block_size(num_tokens, aligned=True, *, topk=None, num_experts=None):
    """The align block size (= GEMM BLOCK_SIZE_M) fused_experts uses for num_tokens tokens
    (pass topk and num_experts, the global expert count, for the layer's exact choice:
    experts with many slots get taller blocks)."""
    if topk is None and num_experts is None:
        return _C.moe_gemm_block_size(int(num_tokens), bool(aligned))
    if not (topk and num_experts and topk > 0 and num_experts > 0):
        raise ValueError(f"topk and num_experts must both be positive, got {topk}, {num_experts}")
    return _C.moe_gemm_block_size_for(int(num_tokens), int(topk), int(num_experts), bool(aligned))


def moe_align_max_padded(numel, num_experts, block_size):
    """Length of sorted_token_ids moe_align_block_size needs (as the C++ API's)."""
    return numel + num_experts * (block_size - 1)


def _ids2d(topk_ids):
    if topk_ids.dtype != _INT32:
        raise ValueError(f"topk_ids must be int32, got {topk_ids.dtype}")
    if topk_ids.dim() == 1:
        topk_ids = topk_ids.view(-1, 1)
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids must be 2-D [tokens, topk], got shape {tuple(topk_ids.shape)}")
    return topk_ids


def moe_align_block_size(topk_ids, block_size, num_experts, expert_map=None, *, workspace=None):
    """Slots grouped by expert and padded to block_size (vLLM's moe_align_block_size).

    topk_ids int32 [M, topk] (contiguous); num_experts: local experts (ids are
    mapped through expert_map, int32 [E_global], when given; -1 = skipped).
    Returns (sorted_token_ids, expert_ids, num_tokens_post_padded), int32.
    """
    _same_device("topk_ids", topk_ids, "expert_map", expert_map, "workspace", workspace)
    ids = _ids2d(topk_ids)
    block_size, num_experts = int(block_size), int(num_experts)
    max_padded = max(moe_align_max_padded(ids.numel(), num_experts, block_size), 0)
    sorted_ids = ids.new_empty((max_padded,))
    expert_ids = ids.new_empty((max(-(-max_padded // max(block_size, 1)), 0),))
    ntpp = ids.new_empty((1,))
    if traced(ids):
        _ops.moe_align_block_size(sorted_ids, expert_ids, ntpp, ids, num_experts, block_size, expert_map, workspace)
    else:
        L.moe_align_block_size(sorted_ids, expert_ids, ntpp, ids, num_experts, block_size, expert_map, workspace)
    return sorted_ids, expert_ids, ntpp


def ep_dispatch(topk_ids, expert_map, num_local_experts, *, workspace=None, force_config=None):
    """Expert-parallel dispatch/combine indices for running the local experts only.

    topk_ids int32 [M, topk] (global ids; local ids when expert_map is None); expert_map
    int32 [E_global]: global -> local expert id, -1 = not on this rank. Returns
    (sorted_token_ids int32 [M * topk], inverse int32 [M, topk], expert_offsets int32 [L + 1]):
    local expert e reads rows x[sorted_token_ids[expert_offsets[e]:expert_offsets[e + 1]]]
    (ascending slot inside an expert, -1 past the total expert_offsets[-1]); slot (m, k)'s
    result sits at position inverse[m, k] (-1: not local), so the combine is
    out[m] = sum_k w[m, k] * y[inverse[m, k]] over inverse[m, k] >= 0.
    """
    _same_device("topk_ids", topk_ids, "expert_map", expert_map, "workspace", workspace)
    ids = _ids2d(topk_ids)
    if not ids.is_contiguous():
        raise ValueError("topk_ids must be contiguous")
    num_local_experts = int(num_local_experts)
    if not 1 <= num_local_experts <= 512:
        raise ValueError(f"num_local_experts={num_local_experts} must be in [1, 512]")
    if expert_map is not None and (expert_map.dtype != _INT32 or expert_map.dim() != 1):
        raise ValueError(f"expert_map must be a 1-D int32 tensor, got {expert_map.dtype} {tuple(expert_map.shape)}")
    sorted_ids = ids.new_empty((ids.numel(),))
    inverse = torch.empty_like(ids)
    offsets = ids.new_empty((num_local_experts + 1,))
    args = (sorted_ids, inverse, offsets, ids, expert_map, num_local_experts, workspace, force_config)
    if traced(ids):
        _ops.ep_dispatch(*args)
    else:
        L.ep_dispatch(*args)
    return sorted_ids, inverse, offsets


def invoke_fused_moe_kernel(A, B, C, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
                            top_k, block_size, *, mul_routed_weight=False, quant=QUANT_NONE,
                            A_scale=None, B_scale=None, force_config=None):
    """C[s] = A[s // top_k] @ B[expert(s)]^T (* topk_weights[s]) for the slots s listed by
    moe_align_block_size (called with the same block_size). Returns the config that
    ran (None when traced by torch.compile / export).

    quant QUANT_FP8_TENSOR: A_scale numel 1, B_scale numel 1 or E; QUANT_FP8_BLOCK:
    A_scale [rows, cdiv(K,128)], B_scale [E, cdiv(N,128), cdiv(K,128)].
    """
    _same_device("A", A, "B", B, "C", C, "topk_weights", topk_weights, "sorted_token_ids", sorted_token_ids,
                 "expert_ids", expert_ids, "num_tokens_post_padded", num_tokens_post_padded, "A_scale", A_scale,
                 "B_scale", B_scale)
    if A.dim() != 2 or B.dim() != 3 or C.dim() != 2:
        raise ValueError("A must be 2-D [rows, K], B 3-D [E, N, K] and C 2-D [slots, N]")
    _not_differentiable("invoke_fused_moe_kernel", A, B, topk_weights)
    if quant == QUANT_FP8_TENSOR:
        A_scale = None if A_scale is None else A_scale.reshape(1, -1)
        B_scale = None if B_scale is None else B_scale.reshape(-1, 1, 1)
    w = None
    if mul_routed_weight:
        if topk_weights is None:
            raise ValueError("mul_routed_weight needs topk_weights")
        w = topk_weights.reshape(-1, 1) if topk_weights.is_contiguous() else topk_weights
        if w.dim() != 2:
            raise ValueError("topk_weights must be contiguous")
    args = (C, A, B, w, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale, int(top_k),
            int(block_size), bool(mul_routed_weight), int(quant), force_config)
    if traced(A):
        _ops.grouped_gemm(*args)
        return None
    return L.grouped_gemm(*args)


def per_token_group_quant_fp8(x, group_size=128):
    """x [M, K] -> (q fp8 e4m3 [M, K], scales fp32 [M, cdiv(K, group_size)])."""
    check_cuda(x, "x")
    check_rank(x, 2, "x", "[tokens, hidden]")
    M, K = x.shape
    q = x.new_empty((M, K), dtype=_FP8)
    s = x.new_empty((M, -(-K // group_size)), dtype=_FP32)
    if traced(x):
        _ops.per_token_group_quant_fp8(q, s, x, int(group_size))
    else:
        L.per_token_group_quant_fp8(q, s, x, int(group_size))
    return q, s


def per_tensor_quant_fp8(x, scale=None):
    """x [M, K] -> (q fp8 e4m3 [M, K], scale fp32 [1]). With scale=None the scale is
    max|x| / 448, computed on the device."""
    _same_device("x", x, "scale", scale)
    check_rank(x, 2, "x", "[tokens, hidden]")
    dynamic = scale is None
    if dynamic:
        scale = x.new_empty((1,), dtype=_FP32)
    q = x.new_empty(x.shape, dtype=_FP8)
    flat = scale.reshape(-1)
    if traced(x):
        _ops.per_tensor_quant_fp8(q, flat, x, dynamic)
    else:
        L.per_tensor_quant_fp8(q, flat, x, dynamic)
    return q, scale


# ---------------------------------------------------------------------------
# fused_experts / fused_moe (vLLM keywords)
# ---------------------------------------------------------------------------
_VLLM_ONLY_ACTIVATIONS = ("silu_no_mul", "gelu_no_mul", "relu2_no_mul")


def _quant_mode(activation, use_fp8_w8a8, use_int8_w8a8, use_int8_w8a16, use_int4_w4a16, use_mxfp4_w4a4,
                per_channel_quant, block_shape, w1_scale, w2_scale, w1_zp, w2_zp):
    """QUANT_* for the arguments; NotImplementedError names a vLLM feature aotriton lacks."""
    if activation not in _ACTIVATIONS:
        if activation in _VLLM_ONLY_ACTIVATIONS:
            raise NotImplementedError(f"aotriton fused_experts: activation={activation!r} is not supported "
                                      f"(have {sorted(_ACTIVATIONS)})")
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    for flag, name in ((use_int8_w8a8, "use_int8_w8a8"), (use_mxfp4_w4a4, "use_mxfp4_w4a4")):
        if flag:
            raise NotImplementedError(f"aotriton fused_experts: {name}=True (int8 w8a8 / mxfp4) is not supported; "
                                      f"fp16/bf16, use_fp8_w8a8, use_int8_w8a16 and use_int4_w4a16 are")
    # fp8 per channel, int8 w8a16, int4 w4a16 (_moe_quant.py).
    mode = _moe_quant.quant_mode(use_fp8_w8a8, use_int8_w8a16, use_int4_w4a16, per_channel_quant, block_shape,
                                 w1_zp, w2_zp)
    if mode is not None:
        return mode[0]
    if per_channel_quant:
        raise ValueError("per_channel_quant=True needs use_fp8_w8a8=True")
    if not use_fp8_w8a8:
        if block_shape is not None or w1_scale is not None or w2_scale is not None:
            raise ValueError("block_shape / w1_scale / w2_scale need use_fp8_w8a8=True")
        return QUANT_NONE
    if block_shape is None:
        return QUANT_FP8_TENSOR
    if list(block_shape) != [128, 128]:
        raise NotImplementedError(f"aotriton fused_experts: fp8 block_shape must be [128, 128], got {block_shape}")
    return QUANT_FP8_BLOCK


def _prepare(hidden_states, w1, w2, topk_weights, topk_ids, quant, w1_scale, w2_scale, a1_scale, a2_scale,
             expert_map, global_num_experts):
    """Checked and converted tensor arguments of the fused_experts op."""
    _same_device("hidden_states", hidden_states, "w1", w1, "w2", w2, "topk_weights", topk_weights, "topk_ids",
                 topk_ids, "w1_scale", w1_scale, "w2_scale", w2_scale, "a1_scale", a1_scale, "a2_scale", a2_scale,
                 "expert_map", expert_map)
    if hidden_states.dim() != 2 or w1.dim() != 3 or w2.dim() != 3:
        raise ValueError("hidden_states must be 2-D [M, K], w1 3-D [E, 2N, K] and w2 3-D [E, K, N]")
    _not_differentiable("fused_experts", hidden_states, w1, w2, topk_weights)
    if global_num_experts not in (-1, None):
        have = w1.shape[0] if expert_map is None else expert_map.shape[0]
        if global_num_experts != have:
            raise ValueError(f"global_num_experts={global_num_experts} but " + (
                f"w1 has {have} experts (and no expert_map)" if expert_map is None else
                f"expert_map has {have} entries"))
    if topk_weights.dtype != _FP32 or not topk_weights.is_contiguous():
        topk_weights = topk_weights.to(_FP32).contiguous()
    ids = _ids2d(topk_ids)
    if quant == QUANT_FP8_TENSOR:
        w1_scale = None if w1_scale is None else w1_scale.reshape(-1, 1, 1)
        w2_scale = None if w2_scale is None else w2_scale.reshape(-1, 1, 1)
    a1 = None if a1_scale is None else a1_scale.reshape(-1)
    a2 = None if a2_scale is None else a2_scale.reshape(-1)
    return topk_weights, ids, w1_scale, w2_scale, a1, a2


def fused_experts_workspace_size(hidden_states, w1, w2, topk_weights, topk_ids, *, activation="silu",
                                 use_fp8_w8a8=False, use_int8_w8a16=False, use_int4_w4a16=False,
                                 per_channel_quant=False, block_shape=None, w1_scale=None, w2_scale=None,
                                 w1_zp=None, w2_zp=None, a1_scale=None, a2_scale=None, expert_map=None,
                                 block_size=None):
    """Bytes of workspace fused_experts needs for these arguments (allocate once, reuse). Eager only."""
    quant = _quant_mode(activation, use_fp8_w8a8, False, use_int8_w8a16, use_int4_w4a16, False, per_channel_quant,
                        block_shape, w1_scale, w2_scale, w1_zp, w2_zp)
    weights, ids, w1s, w2s, a1, a2 = _prepare(hidden_states, w1, w2, topk_weights, topk_ids, quant, w1_scale,
                                              w2_scale, a1_scale, a2_scale, expert_map, -1)
    if quant in (QUANT_FP8_CHANNEL, QUANT_INT8_W8A16, QUANT_INT4_W4A16):
        group = int(block_shape[1]) if quant == QUANT_INT4_W4A16 else 0
        w1s, w2s, w1z, w2z = _moe_quant.prepare_weights(quant, group, hidden_states, w1, w2, w1_scale, w2_scale,
                                                        w1_zp, w2_zp, a1_scale, a2_scale)
        return _moe_quant.workspace_size(hidden_states, w1, w2, weights, ids, _ACTIVATIONS[activation], quant, group,
                                         w1s, w2s, w1z, w2z, expert_map, int(block_size or 0))
    args = L.fused_views(hidden_states, hidden_states, w1, w2, weights, ids, _ACTIVATIONS[activation], quant, w1s, w2s,
                         a1, a2, expert_map)
    return _C.fused_experts_workspace_size(*args, int(block_size or 0))


def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace=False, activation="silu",
                  apply_router_weight_on_input=False, use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False,
                  use_int4_w4a16=False, use_mxfp4_w4a4=False, per_channel_quant=False, global_num_experts=-1,
                  expert_map=None, w1_scale=None, w2_scale=None, w1_zp=None, w2_zp=None, a1_scale=None, a2_scale=None,
                  block_shape=None, allow_deep_gemm=False, allow_cutlass_block_scaled_grouped_gemm=False, *,
                  quant_config=None, w1_bias=None, w2_bias=None, out=None, workspace=None, block_size=None,
                  force_config=None):
    """vLLM's fused_experts: out[m] = sum_k topk_weights[m, k] * (act(x W1g^T) * (x W1u^T)) W2^T, expert topk_ids[m, k].

    hidden_states [M, K] fp16/bf16; w1 [E, 2N, K] (gate rows then up rows); w2 [E, K, N];
    topk_weights [M, topk], topk_ids [M, topk] int32. use_fp8_w8a8: w1/w2 fp8 e4m3
    with w1_scale/w2_scale per tensor ([1] or [E]; a1_scale/a2_scale static activation
    scales, or None for dynamic ones) or, with block_shape=[128, 128], per 128x128 block,
    or with per_channel_quant=True per output channel ([E, 2N](, 1); dynamic per-token
    activation scales). use_int8_w8a16 (per-channel scales) and use_int4_w4a16
    (block_shape=[0, group], optional w1_zp / w2_zp): see _moe_quant.py for the layouts.
    expert_map int32 [E_global]: global -> local expert id, -1 = not on this rank (adds 0);
    global_num_experts (-1 = unchecked) must match it (or E without a map).
    inplace=True writes the result into hidden_states. apply_router_weight_on_input
    (topk == 1) scales the input rows by the router weight instead of the output.
    int8 w8a8, mxfp4 weights, quant_config and biases raise NotImplementedError; allow_deep_gemm / allow_cutlass_* are
    permissions and are ignored.

    aotriton extras (keyword-only): out; workspace: a uint8 CUDA tensor of
    fused_experts_workspace_size(...) bytes (no allocation then, with out given:
    CUDA-graph friendly); block_size: the align/GEMM BLOCK_SIZE_M (16/32/64/128),
    None = the library's choice for M; force_config: the GEMMs' tuning config.
    """
    quant = _quant_mode(activation, use_fp8_w8a8, use_int8_w8a8, use_int8_w8a16, use_int4_w4a16, use_mxfp4_w4a4,
                        per_channel_quant, block_shape, w1_scale, w2_scale, w1_zp, w2_zp)
    if quant_config is not None:
        raise NotImplementedError("aotriton fused_experts: quant_config is not supported; pass use_fp8_w8a8, "
                                  "w1_scale, w2_scale, a1_scale, a2_scale and block_shape instead")
    if w1_bias is not None or w2_bias is not None:
        raise NotImplementedError("aotriton fused_experts: expert biases (w1_bias / w2_bias) are not supported")
    if _grad_enabled() and any(t.requires_grad for t in (hidden_states, w1, w2, topk_weights)):
        return _fused_experts_train(hidden_states, w1, w2, topk_weights, topk_ids, activation, quant, expert_map,
                                    global_num_experts, inplace, out, workspace, apply_router_weight_on_input)
    weights, ids, w1s, w2s, a1, a2 = _prepare(hidden_states, w1, w2, topk_weights, topk_ids, quant, w1_scale,
                                              w2_scale, a1_scale, a2_scale, expert_map, global_num_experts)
    if out is not None or workspace is not None:
        _same_device("hidden_states", hidden_states, "out", out, "workspace", workspace)
    if inplace:
        if out is not None and out is not hidden_states:
            raise ValueError("inplace=True writes into hidden_states: do not pass a different out")
        out = hidden_states
    elif out is None:
        out = torch.empty_like(hidden_states)
    if apply_router_weight_on_input and ids.shape[1] != 1:
        raise ValueError(f"apply_router_weight_on_input needs topk == 1 (Llama 4: the weight scales the token's "
                         f"input row), got topk = {ids.shape[1]}")
    if quant in (QUANT_FP8_CHANNEL, QUANT_INT8_W8A16, QUANT_INT4_W4A16):
        if apply_router_weight_on_input:  # this launcher has no such flag: scale the input rows here
            hidden_states = hidden_states * weights.to(hidden_states.dtype)
            weights = torch.ones_like(weights)
        _same_device("hidden_states", hidden_states, "w1_zp", w1_zp, "w2_zp", w2_zp)
        group = int(block_shape[1]) if quant == QUANT_INT4_W4A16 else 0
        w1s, w2s, w1z, w2z = _moe_quant.prepare_weights(quant, group, hidden_states, w1, w2, w1_scale, w2_scale,
                                                        w1_zp, w2_zp, a1_scale, a2_scale)
        return _moe_quant.fused_experts_quant(out, hidden_states, w1, w2, weights, ids, workspace,
                                              _ACTIVATIONS[activation], quant, group, w1s, w2s, w1z, w2z,
                                              expert_map, int(block_size or 0), force_config)
    args = (out, hidden_states, w1, w2, weights, ids, workspace, _ACTIVATIONS[activation], quant, w1s, w2s, a1, a2,
            expert_map, int(block_size or 0), force_config, bool(apply_router_weight_on_input))
    if traced(out):
        _ops.fused_experts(*args)
    else:
        L.fused_experts(*args)
    return out


def _fused_experts_train(hidden_states, w1, w2, topk_weights, topk_ids, activation, quant, expert_map,
                         global_num_experts, inplace, out, workspace, apply_router_weight_on_input):
    """The differentiable fused_experts (torch.ops.aotriton.fused_experts_train, whose
    backward is fused_experts_backward): fp16/bf16 weights, no expert map; the
    gradients reach hidden_states, w1, w2 and topk_weights."""
    if quant != QUANT_NONE:
        raise NotImplementedError("aotriton fused_experts: fp8 (use_fp8_w8a8) is inference-only and has no backward: "
                                  "call it under torch.no_grad() or on tensors that do not require grad")
    if expert_map is not None:
        raise NotImplementedError("aotriton fused_experts: the backward does not take an expert_map")
    if inplace or out is not None or workspace is not None:
        raise ValueError("aotriton fused_experts: inplace / out / workspace cannot be used when gradients are "
                         "required (the output is a new tensor saved for the backward)")
    _same_device("hidden_states", hidden_states, "w1", w1, "w2", w2, "topk_weights", topk_weights, "topk_ids",
                 topk_ids)
    if hidden_states.dim() != 2 or w1.dim() != 3 or w2.dim() != 3:
        raise ValueError("hidden_states must be 2-D [M, K], w1 3-D [E, 2N, K] and w2 3-D [E, K, N]")
    if global_num_experts not in (-1, None) and global_num_experts != w1.shape[0]:
        raise ValueError(f"global_num_experts={global_num_experts} but w1 has {w1.shape[0]} experts")
    ids = _ids2d(topk_ids).contiguous()
    weights = topk_weights.to(_FP32).contiguous()  # differentiable: the router's weights get their gradient
    if apply_router_weight_on_input:
        if ids.shape[1] != 1:
            raise ValueError(f"apply_router_weight_on_input needs topk == 1, got topk = {ids.shape[1]}")
        hidden_states = hidden_states * weights.to(hidden_states.dtype)
        weights = torch.ones_like(weights)
    # The kernels need unit stride along the last dim (copies are differentiable).
    hidden_states, w1, w2 = (t if t.stride(-1) == 1 else t.contiguous() for t in (hidden_states, w1, w2))
    return _ops.fused_experts_train(hidden_states, w1, w2, weights, ids, _ACTIVATIONS[activation])


def fused_moe(hidden_states, w1, w2, gating_output, topk, renormalize, inplace=False, activation="silu",
              use_grouped_topk=False, num_expert_group=None, topk_group=None, custom_routing_function=None,
              use_fp8_w8a8=False, use_int8_w8a8=False, use_int8_w8a16=False, use_int4_w4a16=False,
              use_mxfp4_w4a4=False, per_channel_quant=False, global_num_experts=-1, expert_map=None, w1_scale=None,
              w2_scale=None, w1_zp=None, w2_zp=None, a1_scale=None, a2_scale=None, block_shape=None, *,
              scoring_func="softmax", e_score_correction_bias=None, routed_scaling_factor=1.0,
              apply_router_weight_on_input=False, out=None, workspace=None, block_size=None, force_config=None):
    """vLLM's fused_moe: router then fused_experts with the same keywords.

    Router: custom_routing_function if given; else use_grouped_topk=True (with
    num_expert_group, topk_group), scoring_func "sigmoid", an e_score_correction_bias
    or a routed_scaling_factor != 1 run grouped_topk (one group unless grouped);
    otherwise softmax top-k (topk_softmax)."""
    if use_grouped_topk and (num_expert_group is None or topk_group is None):
        raise ValueError("use_grouped_topk=True needs num_expert_group and topk_group")
    if custom_routing_function is not None and (use_grouped_topk or e_score_correction_bias is not None):
        raise ValueError("custom_routing_function excludes use_grouped_topk / e_score_correction_bias")
    if custom_routing_function is None and (use_grouped_topk or scoring_func != "softmax" or
                                            e_score_correction_bias is not None or routed_scaling_factor != 1.0):
        groups = (num_expert_group, topk_group) if use_grouped_topk else (1, 1)
        topk_weights, topk_ids = grouped_topk(hidden_states, gating_output, topk, renormalize, *groups,
                                              scoring_func, routed_scaling_factor, e_score_correction_bias)
    elif custom_routing_function is None:
        topk_weights, topk_ids = topk_softmax(gating_output, topk, renormalize)
    else:
        topk_weights, topk_ids = custom_routing_function(hidden_states=hidden_states, gating_output=gating_output,
                                                         topk=topk, renormalize=renormalize)
        topk_ids = topk_ids.to(_INT32)
    return fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace, activation,
                         apply_router_weight_on_input, use_fp8_w8a8,
                         use_int8_w8a8, use_int8_w8a16, use_int4_w4a16, use_mxfp4_w4a4, per_channel_quant,
                         global_num_experts, expert_map, w1_scale, w2_scale, w1_zp, w2_zp, a1_scale, a2_scale,
                         block_shape, out=out, workspace=workspace, block_size=block_size, force_config=force_config)
