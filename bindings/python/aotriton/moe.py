"""Mixture-of-experts operators on torch tensors."""
import pyaotriton as _C
import torch

from ._glue import check_cuda, launch_env, view

SILU, GELU, GELU_TANH = 0, 1, 2


def _act_and_mul(x: torch.Tensor, activation: int, out=None, force_config=None) -> torch.Tensor:
    check_cuda(x, "input")
    if x.dim() != 2:
        raise ValueError(f"input must be 2-D [tokens, 2 * N], got shape {tuple(x.shape)}")
    if out is None:
        out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
    stream, guard = launch_env(x)
    with guard:
        _C.act_and_mul(view(out, "out"), view(x, "input"), activation, stream, force_config)
    return out


def silu_and_mul(x: torch.Tensor, out=None, *, force_config=None) -> torch.Tensor:
    """silu(x[:, :N]) * x[:, N:] for x of shape [M, 2N]."""
    return _act_and_mul(x, SILU, out, force_config)


def gelu_and_mul(x: torch.Tensor, out=None, *, approximate: str = "none", force_config=None) -> torch.Tensor:
    """gelu(x[:, :N]) * x[:, N:]; approximate="tanh" for the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act_and_mul(x, GELU if approximate == "none" else GELU_TANH, out, force_config)


def moe_sum(x: torch.Tensor, out=None, *, force_config=None) -> torch.Tensor:
    """Sum over the top-k axis: [M, topk, H] -> [M, H]."""
    check_cuda(x, "input")
    if x.dim() != 3:
        raise ValueError(f"input must be 3-D [tokens, topk, hidden], got shape {tuple(x.shape)}")
    if out is None:
        out = torch.empty((x.shape[0], x.shape[2]), dtype=x.dtype, device=x.device)
    stream, guard = launch_env(x)
    with guard:
        _C.moe_sum(view(out, "out"), view(x, "input"), stream, force_config)
    return out


# ---------------------------------------------------------------------------
# Fused MoE: routing, alignment, grouped GEMM, fp8 quantization, fused_experts
# ---------------------------------------------------------------------------
QUANT_NONE, QUANT_FP8_TENSOR, QUANT_FP8_BLOCK = 0, 1, 2
_ACTIVATIONS = {"silu": SILU, "gelu": GELU, "gelu_tanh": GELU_TANH}
_FP8 = torch.float8_e4m3fn


def _opt(t, name):
    return None if t is None else view(t, name)


def _workspace(nbytes, device, workspace, name="workspace"):
    """A caller's uint8 workspace (checked) or a fresh one."""
    if workspace is None:
        return torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)
    check_cuda(workspace, name)
    if workspace.numel() * workspace.element_size() < nbytes or not workspace.is_contiguous():
        raise ValueError(f"{name} must be a contiguous CUDA buffer of at least {nbytes} bytes")
    return workspace


def topk_softmax(gating_output, topk, renormalize=False, *, topk_weights=None, topk_ids=None, force_config=None):
    """Router: softmax over experts then top-k. gating_output [M, E] fp16/bf16/fp32 ->
    (topk_weights fp32 [M, topk], topk_ids int32 [M, topk])."""
    check_cuda(gating_output, "gating_output")
    if gating_output.dim() != 2:
        raise ValueError(f"gating_output must be 2-D [tokens, experts], got shape {tuple(gating_output.shape)}")
    M = gating_output.shape[0]
    dev = gating_output.device
    if topk_weights is None:
        topk_weights = torch.empty(M, topk, dtype=torch.float32, device=dev)
    if topk_ids is None:
        topk_ids = torch.empty(M, topk, dtype=torch.int32, device=dev)
    stream, guard = launch_env(gating_output)
    with guard:
        _C.topk_softmax(view(gating_output, "gating_output"), view(topk_weights, "topk_weights"),
                        view(topk_ids, "topk_ids"), bool(renormalize), stream, force_config)
    return topk_weights, topk_ids


def moe_gemm_block_size(num_tokens, aligned=True):
    """The align block size (= GEMM BLOCK_SIZE_M) fused_experts uses for num_tokens tokens."""
    return _C.moe_gemm_block_size(int(num_tokens), bool(aligned))


def _ids2d(topk_ids):
    if topk_ids.dtype != torch.int32:
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
    check_cuda(topk_ids, "topk_ids")
    ids = _ids2d(topk_ids)
    dev = ids.device
    numel = ids.numel()
    max_padded = _C.moe_align_max_padded(numel, int(num_experts), int(block_size))
    sorted_ids = torch.empty(max(max_padded, 0), dtype=torch.int32, device=dev)
    expert_ids = torch.empty(max(-(-max_padded // max(block_size, 1)), 0), dtype=torch.int32, device=dev)
    ntpp = torch.empty(1, dtype=torch.int32, device=dev)
    ws = _workspace(_C.moe_align_workspace_size(numel, int(num_experts)), dev, workspace)
    stream, guard = launch_env(ids)
    with guard:
        _C.moe_align_block_size(view(ids, "topk_ids"), int(num_experts), int(block_size),
                                _opt(expert_map, "expert_map"), view(sorted_ids, "sorted_token_ids"),
                                view(expert_ids, "expert_ids"), view(ntpp, "num_tokens_post_padded"),
                                ws.data_ptr(), ws.numel(), stream)
    return sorted_ids, expert_ids, ntpp


def invoke_fused_moe_kernel(A, B, C, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
                            top_k, block_size, *, mul_routed_weight=False, quant=QUANT_NONE,
                            A_scale=None, B_scale=None, force_config=None):
    """C[s] = A[s // top_k] @ B[expert(s)]^T (* topk_weights[s]) for the slots s listed by
    moe_align_block_size (called with the same block_size). Returns the config that ran.

    quant QUANT_FP8_TENSOR: A_scale numel 1, B_scale numel 1 or E; QUANT_FP8_BLOCK:
    A_scale [rows, cdiv(K,128)], B_scale [E, cdiv(N,128), cdiv(K,128)].
    """
    for name, t in (("A", A), ("B", B), ("C", C)):
        check_cuda(t, name)
    if A.dim() != 2 or B.dim() != 3 or C.dim() != 2:
        raise ValueError("A must be 2-D [rows, K], B 3-D [E, N, K] and C 2-D [slots, N]")
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
    stream, guard = launch_env(A)
    with guard:
        return _C.grouped_gemm(view(A, "A"), view(B, "B"), view(C, "C"), _opt(A_scale, "A_scale"),
                               _opt(B_scale, "B_scale"), _opt(w, "topk_weights"),
                               view(sorted_token_ids, "sorted_token_ids"), view(expert_ids, "expert_ids"),
                               view(num_tokens_post_padded, "num_tokens_post_padded"), int(top_k),
                               int(block_size), bool(mul_routed_weight), int(quant), stream, force_config)


def per_token_group_quant_fp8(x, group_size=128):
    """x [M, K] -> (q fp8 e4m3 [M, K], scales fp32 [M, cdiv(K, group_size)])."""
    check_cuda(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D, got shape {tuple(x.shape)}")
    M, K = x.shape
    q = torch.empty(M, K, dtype=_FP8, device=x.device)
    s = torch.empty(M, -(-K // group_size), dtype=torch.float32, device=x.device)
    stream, guard = launch_env(x)
    with guard:
        _C.per_token_group_quant_fp8(view(x, "x"), view(q, "q"), view(s, "scales"), int(group_size), stream)
    return q, s


def per_tensor_quant_fp8(x, scale=None):
    """x [M, K] -> (q fp8 e4m3 [M, K], scale fp32 [1]). With scale=None the scale is
    max|x| / 448, computed on the device."""
    check_cuda(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D, got shape {tuple(x.shape)}")
    dynamic = scale is None
    if dynamic:
        scale = torch.empty(1, dtype=torch.float32, device=x.device)
    q = torch.empty(x.shape, dtype=_FP8, device=x.device)
    ws = _workspace(_C.per_tensor_quant_workspace_size(x.shape[0]) if dynamic else 0, x.device, None)
    stream, guard = launch_env(x)
    with guard:
        _C.per_tensor_quant_fp8(view(x, "x"), view(q, "q"), view(scale.reshape(-1), "scale"), dynamic,
                                ws.data_ptr(), ws.numel(), stream)
    return q, scale


def _fused_args(hidden_states, w1, w2, topk_weights, topk_ids, out, activation, use_fp8_w8a8,
                per_channel_quant, block_shape, w1_scale, w2_scale, a1_scale, a2_scale, expert_map):
    """(positional arguments of _C.fused_experts up to expert_map, tensors to keep alive)."""
    for name, t in (("hidden_states", hidden_states), ("w1", w1), ("w2", w2), ("topk_weights", topk_weights),
                    ("topk_ids", topk_ids)):
        check_cuda(t, name)
    if hidden_states.dim() != 2 or w1.dim() != 3 or w2.dim() != 3:
        raise ValueError("hidden_states must be 2-D [M, K], w1 3-D [E, 2N, K] and w2 3-D [E, K, N]")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if per_channel_quant:
        raise ValueError("per-channel fp8 weight scales are not supported (use per-tensor or block_shape=[128, 128])")
    quant = QUANT_NONE
    if use_fp8_w8a8:
        quant = QUANT_FP8_TENSOR
        if block_shape is not None:
            if list(block_shape) != [128, 128]:
                raise ValueError(f"block_shape must be [128, 128], got {block_shape}")
            quant = QUANT_FP8_BLOCK
    elif block_shape is not None or w1_scale is not None or w2_scale is not None:
        raise ValueError("block_shape / w1_scale / w2_scale need use_fp8_w8a8=True")
    weights = topk_weights.to(torch.float32).contiguous()
    ids = _ids2d(topk_ids)
    if quant == QUANT_FP8_TENSOR:
        w1_scale = None if w1_scale is None else w1_scale.reshape(-1, 1, 1)
        w2_scale = None if w2_scale is None else w2_scale.reshape(-1, 1, 1)
    a1 = None if a1_scale is None else a1_scale.reshape(-1)
    a2 = None if a2_scale is None else a2_scale.reshape(-1)
    args = (view(hidden_states, "hidden_states"), view(w1, "w1"), view(w2, "w2"), view(weights, "topk_weights"),
            view(ids, "topk_ids"), view(out, "out"), _ACTIVATIONS[activation], quant,
            _opt(w1_scale, "w1_scale"), _opt(w2_scale, "w2_scale"), _opt(a1, "a1_scale"), _opt(a2, "a2_scale"),
            _opt(expert_map, "expert_map"))
    # The views hold raw pointers: keep any converted copy alive until the launch.
    return args, (weights, ids, w1_scale, w2_scale, a1, a2)


def fused_experts_workspace_size(hidden_states, w1, w2, topk_weights, topk_ids, *, activation="silu",
                                 use_fp8_w8a8=False, per_channel_quant=False, block_shape=None, w1_scale=None,
                                 w2_scale=None, a1_scale=None, a2_scale=None, expert_map=None, block_size=None):
    """Bytes of workspace fused_experts needs for these arguments (allocate once, reuse)."""
    args, _keep = _fused_args(hidden_states, w1, w2, topk_weights, topk_ids, hidden_states, activation,
                              use_fp8_w8a8, per_channel_quant, block_shape, w1_scale, w2_scale, a1_scale, a2_scale,
                              expert_map)
    return _C.fused_experts_workspace_size(*args, int(block_size or 0))


def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, *, activation="silu", use_fp8_w8a8=False,
                  per_channel_quant=False, block_shape=None, w1_scale=None, w2_scale=None, a1_scale=None,
                  a2_scale=None, expert_map=None, out=None, workspace=None, block_size=None, force_config=None):
    """MoE MLP: out[m] = sum_k topk_weights[m, k] * (act(x W1g^T) * (x W1u^T)) W2^T, expert topk_ids[m, k].

    hidden_states [M, K] fp16/bf16; w1 [E, 2N, K] (gate rows then up rows); w2 [E, K, N];
    topk_weights [M, topk] (fp32), topk_ids [M, topk] int32. use_fp8_w8a8: w1/w2 fp8 e4m3
    with w1_scale/w2_scale per tensor ([1] or [E]; a1_scale/a2_scale static activation
    scales, or None for dynamic ones) or, with block_shape=[128, 128], per 128x128 block.
    expert_map int32 [E_global]: global -> local expert id, -1 = not on this rank (adds 0).
    workspace: a uint8 CUDA tensor of fused_experts_workspace_size(...) bytes (no
    allocation then, with out given: CUDA-graph friendly). block_size: the align/GEMM
    BLOCK_SIZE_M (16/32/64/128), None = the library's choice for M.
    """
    if out is None:
        out = torch.empty_like(hidden_states)
    args, _keep = _fused_args(hidden_states, w1, w2, topk_weights, topk_ids, out, activation, use_fp8_w8a8,
                              per_channel_quant, block_shape, w1_scale, w2_scale, a1_scale, a2_scale, expert_map)
    bs = int(block_size or 0)
    nbytes = _C.fused_experts_workspace_size(*args, bs)
    ws = _workspace(nbytes, hidden_states.device, workspace)
    stream, guard = launch_env(hidden_states)
    with guard:
        _C.fused_experts(*args, bs, ws.data_ptr(), nbytes, stream, force_config)
    return out


def fused_moe(hidden_states, w1, w2, gating_output, topk, renormalize, **kwargs):
    """Router (softmax + top-k) then fused_experts; kwargs as fused_experts."""
    topk_weights, topk_ids = topk_softmax(gating_output, topk, renormalize)
    return fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, **kwargs)
