"""The MoE quantization modes of issue 13, as vLLM spells them:

  use_fp8_w8a8=True, per_channel_quant=True   fp8 weights with per-output-channel
      scales w1_scale [E, 2N] or [E, 2N, 1] (w2_scale [E, K](, 1)); activations
      quantized per token with dynamic scales (a1_scale / a2_scale must be None).
  use_int8_w8a16=True    int8 weights w1 [E, 2N, K], per-channel scales as above.
  use_int4_w4a16=True, block_shape=[0, group]   packed int4 weights w1 uint8
      [E, 2N, K // 2] (byte j: k = 2j low nibble, 2j + 1 high), group scales
      w1_scale [E, 2N, K // group], optional zero points w1_zp / w2_zp uint8
      [E, N, K // group] / [E, cdiv(K, 2), N // group] (two per byte along the
      output dim, low nibble = even row; absent: 8). group: a multiple of 64.

Scales may be fp32, fp16 or bf16 (converted to fp32: what the kernels read).
Torch custom ops: aotriton::fused_experts_quant, aotriton::grouped_gemm_quant,
aotriton::per_token_quant_fp8 (mutating, with fake implementations).
"""
from typing import Optional

import pyaotriton as _C
import torch
from torch import Tensor

from ._glue import check_rank, eager_stream, opt_view, traced, view

QUANT_FP8_CHANNEL, QUANT_INT8_W8A16, QUANT_INT4_W4A16 = 3, 4, 5
_FP8, _FP32, _UINT8, _INT8 = torch.float8_e4m3fn, torch.float32, torch.uint8, torch.int8
_WEIGHT_DTYPE = {QUANT_FP8_CHANNEL: _FP8, QUANT_INT8_W8A16: _INT8, QUANT_INT4_W4A16: _UINT8}
_lib = torch.library


def quant_mode(use_fp8_w8a8, use_int8_w8a16, use_int4_w4a16, per_channel_quant, block_shape, w1_zp, w2_zp):
    """(QUANT_*, group_size) for the issue-13 modes, or None when the flags ask for another one."""
    if sum(map(bool, (use_fp8_w8a8, use_int8_w8a16, use_int4_w4a16))) > 1:
        raise ValueError("use_fp8_w8a8, use_int8_w8a16 and use_int4_w4a16 are exclusive")
    zp = w1_zp is not None or w2_zp is not None
    if zp and not use_int4_w4a16:
        raise NotImplementedError("aotriton fused_experts: zero points (w1_zp / w2_zp) are supported with "
                                  "use_int4_w4a16=True only")
    if use_int4_w4a16:
        if block_shape is None or len(block_shape) != 2 or block_shape[0] != 0:
            raise ValueError(f"use_int4_w4a16 needs block_shape=[0, group_size], got {block_shape}")
        group = int(block_shape[1])
        if group <= 0 or group % 64:
            raise NotImplementedError(f"aotriton fused_experts: int4 group size {group} is not supported "
                                      f"(multiples of 64: 64, 128, ...)")
        if (w1_zp is None) != (w2_zp is None):
            raise ValueError("w1_zp and w2_zp must be given together (or neither)")
        return QUANT_INT4_W4A16, group
    if use_int8_w8a16:
        if block_shape is not None and list(block_shape) not in ([0, 0], [0, -1]):
            raise NotImplementedError(f"aotriton fused_experts: int8 w8a16 takes per-channel scales only "
                                      f"(block_shape=None), got block_shape={block_shape}")
        return QUANT_INT8_W8A16, 0
    if use_fp8_w8a8 and per_channel_quant:
        if block_shape is not None:
            raise ValueError("per_channel_quant=True and block_shape are exclusive")
        return QUANT_FP8_CHANNEL, 0
    return None


def _scale(t, name, shape, mode):
    """fp32 scales of exactly `shape` (a trailing 1 may be omitted)."""
    if t is None:
        raise ValueError(f"{name} is required for {mode}")
    if t.dtype not in (_FP32, torch.float16, torch.bfloat16):
        raise ValueError(f"{name} must be fp32, fp16 or bf16, got {t.dtype}")
    if tuple(t.shape) == tuple(shape[:-1]) and shape[-1] == 1:
        t = t.unsqueeze(-1)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} for {mode}, got {tuple(t.shape)}")
    return t if t.dtype == _FP32 else t.to(_FP32)


def prepare_weights(quant, group, hidden_states, w1, w2, w1_scale, w2_scale, w1_zp, w2_zp, a1_scale, a2_scale):
    """Checked weight scales / zero points as the C++ op takes them."""
    name = {QUANT_FP8_CHANNEL: "fp8 per-channel", QUANT_INT8_W8A16: "int8 w8a16", QUANT_INT4_W4A16: "int4 w4a16"}[quant]
    if a1_scale is not None or a2_scale is not None:
        raise ValueError(f"a1_scale / a2_scale must be None with {name} (activations are "
                         + ("quantized per token on the fly)" if quant == QUANT_FP8_CHANNEL else "not quantized)"))
    for w, wn in ((w1, "w1"), (w2, "w2")):
        if w.dtype != _WEIGHT_DTYPE[quant]:
            raise ValueError(f"{wn} must be {_WEIGHT_DTYPE[quant]} for {name}, got {w.dtype}")
    E, N2 = w1.shape[0], w1.shape[1]
    K = hidden_states.shape[1]
    if quant == QUANT_INT4_W4A16:
        if K % 2:
            raise ValueError(f"packed int4 needs an even hidden size, got K = {K}")
        for dim, what in ((K, "hidden size K"), (N2 // 2, "intermediate size N")):
            if dim % group:
                raise ValueError(f"int4 group size {group} does not divide the {what} = {dim}")
        w1s = _scale(w1_scale, "w1_scale", (E, N2, K // group), name)
        w2s = _scale(w2_scale, "w2_scale", (E, K, N2 // 2 // group), name)
        for z, zn in ((w1_zp, "w1_zp"), (w2_zp, "w2_zp")):
            if z is not None and z.dtype != _UINT8:
                raise ValueError(f"{zn} must be uint8 (two uint4 per byte), got {z.dtype}")
        return w1s, w2s, w1_zp, w2_zp
    return _scale(w1_scale, "w1_scale", (E, N2, 1), name), _scale(w2_scale, "w2_scale", (E, K, 1), name), None, None


# ---------------------------------------------------------------- eager launches
def _workspace(nbytes, like, ws):
    if ws is None:
        return like.new_empty((max(nbytes, 1),), dtype=_UINT8)
    if ws.numel() * ws.element_size() < nbytes or not ws.is_contiguous():
        raise ValueError(f"workspace must be a contiguous CUDA buffer of at least {nbytes} bytes")
    return ws


def _launch_fused(out, hidden, w1, w2, topk_weights, topk_ids, ws, activation, quant, w1_scale, w2_scale, w1_zp,
                  w2_zp, group_size, expert_map, block_size, force_config):
    stream = eager_stream(hidden)
    if stream is None:
        with torch.cuda.device(hidden.get_device()):
            return _launch_fused(out, hidden, w1, w2, topk_weights, topk_ids, ws, activation, quant, w1_scale,
                                 w2_scale, w1_zp, w2_zp, group_size, expert_map, block_size, force_config)
    args = (view(hidden, "hidden_states"), view(w1, "w1"), view(w2, "w2"), view(topk_weights, "topk_weights"),
            view(topk_ids, "topk_ids"), view(out, "out"), activation, quant, view(w1_scale, "w1_scale"),
            view(w2_scale, "w2_scale"), opt_view(w1_zp, "w1_zp"), opt_view(w2_zp, "w2_zp"), group_size,
            opt_view(expert_map, "expert_map"), block_size)
    nbytes = _C.fused_experts_quant_workspace_size(*args)  # also checks every argument
    ws = _workspace(nbytes, hidden, ws)
    return _C.fused_experts_quant(*args, ws.data_ptr(), nbytes, stream, force_config)


def workspace_size(hidden, w1, w2, topk_weights, topk_ids, activation, quant, group_size, w1_scale, w2_scale, w1_zp,
                   w2_zp, expert_map, block_size):
    """Bytes fused_experts needs in an issue-13 mode (checks the arguments)."""
    return _C.fused_experts_quant_workspace_size(
        view(hidden, "hidden_states"), view(w1, "w1"), view(w2, "w2"), view(topk_weights, "topk_weights"),
        view(topk_ids, "topk_ids"), view(hidden, "out"), activation, quant, view(w1_scale, "w1_scale"),
        view(w2_scale, "w2_scale"), opt_view(w1_zp, "w1_zp"), opt_view(w2_zp, "w2_zp"), group_size,
        opt_view(expert_map, "expert_map"), block_size)


@_lib.custom_op("aotriton::fused_experts_quant", mutates_args=("out", "workspace"))
def fused_experts_quant_op(out: Tensor, hidden_states: Tensor, w1: Tensor, w2: Tensor, topk_weights: Tensor,
                           topk_ids: Tensor, workspace: Optional[Tensor], activation: int, quant: int, w1_scale: Tensor,
                           w2_scale: Tensor, w1_zp: Optional[Tensor], w2_zp: Optional[Tensor], group_size: int,
                           expert_map: Optional[Tensor], block_size: int, force_config: Optional[str]) -> None:
    _launch_fused(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale,
                  w2_scale, w1_zp, w2_zp, group_size, expert_map, block_size, force_config)


@fused_experts_quant_op.register_fake
def _(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale, w2_scale, w1_zp,
      w2_zp, group_size, expert_map, block_size, force_config):
    if tuple(out.shape) != tuple(hidden_states.shape):
        raise ValueError(f"out must have shape {tuple(hidden_states.shape)}, got {tuple(out.shape)}")
    if tuple(topk_ids.shape) != tuple(topk_weights.shape):
        raise ValueError("topk_ids and topk_weights must have the same shape")


def fused_experts_quant(out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, group,
                        w1_scale, w2_scale, w1_zp, w2_zp, expert_map, block_size, force_config):
    """fused_experts' path for the issue-13 modes (arguments already checked by moe.fused_experts)."""
    args = (out, hidden_states, w1, w2, topk_weights, topk_ids, workspace, activation, quant, w1_scale, w2_scale,
            w1_zp, w2_zp, group, expert_map, block_size, force_config)
    if traced(out):
        torch.ops.aotriton.fused_experts_quant(*args)
    else:
        _launch_fused(*args)
    return out


# ---------------------------------------------------------------- per-token quant
def _launch_token_quant(q, scales, x):
    stream = eager_stream(x)
    if stream is None:
        with torch.cuda.device(x.get_device()):
            return _launch_token_quant(q, scales, x)
    _C.per_token_quant_fp8(view(x, "x"), view(q, "q"), view(scales, "scales"), stream)


@_lib.custom_op("aotriton::per_token_quant_fp8", mutates_args=("q", "scales"))
def per_token_quant_fp8_op(q: Tensor, scales: Tensor, x: Tensor) -> None:
    _launch_token_quant(q, scales, x)


@per_token_quant_fp8_op.register_fake
def _(q, scales, x):
    if tuple(q.shape) != tuple(x.shape) or tuple(scales.shape) != (x.shape[0], 1):
        raise ValueError("q must have x's shape and scales [M, 1]")


def per_token_quant_fp8(x):
    """x [M, K] fp16/bf16 -> (q fp8 e4m3 [M, K], scales fp32 [M, 1]) with dynamic
    per-token scales max|x[m]| / 448 (K a multiple of 16)."""
    check_rank(x, 2, "x", "[tokens, hidden]")
    q = x.new_empty(x.shape, dtype=_FP8)
    s = x.new_empty((x.shape[0], 1), dtype=_FP32)
    if traced(x):
        torch.ops.aotriton.per_token_quant_fp8(q, s, x)
    else:
        _launch_token_quant(q, s, x)
    return q, s


# ---------------------------------------------------------------- grouped GEMM
def _launch_gemm(C, A, B, topk_weights, sorted_ids, expert_ids, ntpp, A_scale, B_scale, B_zp, group_size, top_k,
                 block_size, mul_routed_weight, quant, force_config):
    stream = eager_stream(A)
    if stream is None:
        with torch.cuda.device(A.get_device()):
            return _launch_gemm(C, A, B, topk_weights, sorted_ids, expert_ids, ntpp, A_scale, B_scale, B_zp,
                                group_size, top_k, block_size, mul_routed_weight, quant, force_config)
    return _C.grouped_gemm_quant(view(A, "A"), view(B, "B"), view(C, "C"), opt_view(A_scale, "A_scale"),
                                 view(B_scale, "B_scale"), opt_view(B_zp, "B_zp"), group_size,
                                 opt_view(topk_weights, "topk_weights"), view(sorted_ids, "sorted_token_ids"),
                                 view(expert_ids, "expert_ids"), view(ntpp, "num_tokens_post_padded"), top_k,
                                 block_size, mul_routed_weight, quant, stream, force_config)


@_lib.custom_op("aotriton::grouped_gemm_quant", mutates_args=("C",))
def grouped_gemm_quant_op(C: Tensor, A: Tensor, B: Tensor, topk_weights: Optional[Tensor], sorted_token_ids: Tensor,
                          expert_ids: Tensor, num_tokens_post_padded: Tensor, A_scale: Optional[Tensor],
                          B_scale: Tensor, B_zp: Optional[Tensor], group_size: int, top_k: int, block_size: int,
                          mul_routed_weight: bool, quant: int, force_config: Optional[str]) -> None:
    _launch_gemm(C, A, B, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale, B_zp,
                 group_size, top_k, block_size, mul_routed_weight, quant, force_config)


@grouped_gemm_quant_op.register_fake
def _(C, A, B, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale, B_zp,
      group_size, top_k, block_size, mul_routed_weight, quant, force_config):
    if C.shape[1] != B.shape[1]:
        raise ValueError(f"C must have N = B.shape[1] = {B.shape[1]} columns, got {C.shape[1]}")


def invoke_grouped_gemm_quant(A, B, C, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, top_k,
                              block_size, quant, B_scale, *, A_scale=None, B_zp=None, group_size=0,
                              mul_routed_weight=False, force_config=None):
    """The grouped GEMM in an issue-13 mode (see include/aotriton/moe.h, QuantMode):
    QUANT_FP8_CHANNEL: A fp8 with A_scale [rows, 1], B fp8 with B_scale [E, N, 1];
    QUANT_INT8_W8A16: A fp16/bf16, B int8, B_scale [E, N, 1];
    QUANT_INT4_W4A16: A fp16/bf16, B uint8 [E, N, K // 2], B_scale [E, N, K // group_size],
    B_zp uint8 [E, cdiv(N, 2), K // group_size] or None. Returns the config that ran
    (None when traced)."""
    w = None
    if mul_routed_weight:
        if topk_weights is None:
            raise ValueError("mul_routed_weight needs topk_weights")
        w = topk_weights.reshape(-1, 1)
    if B_scale is not None and B_scale.dim() == 2:
        B_scale = B_scale.unsqueeze(-1)
    args = (C, A, B, w, sorted_token_ids, expert_ids, num_tokens_post_padded, A_scale, B_scale, B_zp,
            int(group_size), int(top_k), int(block_size), bool(mul_routed_weight), int(quant), force_config)
    if traced(A):
        torch.ops.aotriton.grouped_gemm_quant(*args)
        return None
    return _launch_gemm(*args)
