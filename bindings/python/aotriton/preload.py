"""aotriton.preload: load kernel modules ahead of CUDA graph capture.

The runtime loads a functional's module on its first use in a context. That
load runs in relaxed capture mode, so a first call inside a capture works on
current drivers, but loading ahead keeps decompression and module loading out
of the capture and out of the first timed step. preload() switches the runtime
to "load every tuning config of a functional on first use" and runs each
requested functional once on tiny inputs, so later calls of any size (whose
tuned config may differ) never load a module.
"""
import pyaotriton as _C
import torch

from .flash import flash_attn_func, flash_attn_varlen_func
from .moe import fused_moe, gelu_and_mul, moe_sum, silu_and_mul

_FLASH_CAUSAL = ("none", "top_left", "bottom_right")


def _flash(dtype, head_dim, device, causal_types, dropout, backward, varlen):
    # (B, S, H, D) contiguous: head dims that are not multiples of 8 take the
    # unaligned functionals, as real tensors of that head dim do.
    q, k, v = (torch.randn(1, 16, 2, head_dim, device=device, dtype=dtype).requires_grad_(backward)
               for _ in range(3))
    cu = torch.tensor([0, 16], dtype=torch.int32, device=device)
    for causal_type in causal_types:
        for p in dropout:
            # Both backward paths: dQ by atomics (the default, sm_90) and deterministic (one path with dropout).
            for deterministic in ((False, True) if backward and not p else (False,)):
                out = flash_attn_func(q, k, v, p, causal_type=causal_type, deterministic=deterministic)
                if backward:
                    out.sum().backward()
            if varlen:
                qv, kv, vv = (t.detach()[0].requires_grad_(backward) for t in (q, k, v))
                out = flash_attn_varlen_func(qv, kv, vv, cu, cu, 16, 16, p, causal_type=causal_type)
                if backward:
                    out.sum().backward()


def _moe(dtype, device, E, N, K, topk, activation, tokens):
    w1 = torch.randn(E, 2 * N, K, device=device, dtype=dtype) / K ** 0.5
    w2 = torch.randn(E, K, N, device=device, dtype=dtype) / N ** 0.5
    for M in tokens:
        x = torch.randn(M, K, device=device, dtype=dtype)
        fused_moe(x, w1, w2, torch.randn(M, E, device=device, dtype=dtype), topk, True, activation=activation)
    x = torch.randn(4, 2 * N, device=device, dtype=dtype)
    (silu_and_mul if activation == "silu" else gelu_and_mul)(x)
    moe_sum(torch.randn(4, topk, K, device=device, dtype=dtype))


def preload(dtypes, head_dims=(), *, moe_shapes=(), device=None, causal_types=_FLASH_CAUSAL, dropout=(0.0,),
            backward=True, varlen=False, moe_activation="silu", moe_tokens=(1, 32, 256, 2048)):
    """Load the modules of the functionals a model will use, before capturing it
    in a CUDA graph (or to keep module loading out of the first timed call).

    dtypes x head_dims: flash attention forward (and backward unless
    backward=False) for every causal kind in causal_types ("none", "top_left",
    "bottom_right") and dropout rate in dropout (add e.g. 0.1 to cover dropout),
    batched and, with varlen=True, varlen. moe_shapes: (num_experts, N, K, topk)
    per fp16/bf16 MoE layer (w1 [E, 2N, K], w2 [E, K, N]); fused_moe runs once
    per token count in moe_tokens (they cover every GEMM block size and both
    alignment paths), plus silu_and_mul / gelu_and_mul and moe_sum. Not covered:
    expert_map and fp8 layers (one eager call of each before the capture loads
    them). Every tuning config of each functional is loaded, not only those the
    tiny calls pick. A functional missing from this build raises, as the real
    call would. Returns the number of modules loaded by this call.
    """
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    before = _C.module_load_count()
    was = _C.load_all_configs()
    _C.set_load_all_configs(True)
    try:
        with torch.cuda.device(device):
            for dtype in dtypes:
                for head_dim in head_dims:
                    _flash(dtype, int(head_dim), device, tuple(causal_types), tuple(dropout), backward, varlen)
                for E, N, K, topk in moe_shapes:
                    _moe(dtype, device, int(E), int(N), int(K), int(topk), moe_activation, moe_tokens)
            torch.cuda.synchronize(device)
    finally:
        _C.set_load_all_configs(was)
    return _C.module_load_count() - before
