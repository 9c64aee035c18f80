"""JIT launcher for tritonsrc.flash.fwd_hopper.attn_fwd_hopper (the tuner, and
JIT-vs-AOT tests): the same 5-D TMA views and arguments the AOT operator
passes (v2src/ops/flash_fwd.cc). Needs an sm_90 GPU."""
import torch
import triton

from .fwd_hopper import attn_fwd_hopper

BLOCK_M = 128


def _view(t, rows):
    """[B, S, H, D] as the TMA descriptor [B, H, D/64, S, 64] with a box of one
    (batch, head), `rows` rows and the whole head dim."""
    from triton.experimental.gluon.language._layouts import NVMMASharedLayout
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, S, H, D = t.shape
    shape = [B, H, D // 64, S, 64]
    strides = [t.stride(0), t.stride(2), 64, t.stride(1), 1]
    layout = NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=5)
    return TensorDescriptor(t, shape, strides, [1, 1, D // 64, rows, 64], layout)


def attn_fwd_hopper_jit(q, k, v, sm_scale, causal_type=0, config=None):
    """(out, lse) for batched q [B, Sq, Hq, D], k/v [B, Sk, Hk, D]; config:
    {BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps, maxnreg} (default: the rule's)."""
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    if config is None:
        import rules_flash_hopper
        config = rules_flash_hopper._default({"BLOCK_DMODEL": D, "CAUSAL_TYPE": causal_type}, 90)
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(Sq, BLOCK_M), B * Hq)
    attn_fwd_hopper[grid](
        _view(q, BLOCK_M), _view(k, config["BLOCK_N"]), _view(v, config["BLOCK_N"]), out, lse, sm_scale,
        out.stride(0), out.stride(2), out.stride(1), lse.stride(0), lse.stride(1), Hq, Hk, Sq, Sk,
        BLOCK_DMODEL=D, CAUSAL_TYPE=causal_type, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        NUM_STAGES=config["NUM_STAGES"], SCHEDULE=config["SCHEDULE"], num_warps=config["num_warps"],
        **({"maxnreg": config["maxnreg"]} if config.get("maxnreg") else {}))
    return out, lse
