"""JIT launcher for tritonsrc.flash.fwd_hopper.attn_fwd_hopper (the tuner, and
JIT-vs-AOT tests): the same 5-D TMA views and arguments the AOT operator
passes (v2src/ops/flash_fwd.cc). Needs an sm_90 GPU."""
import torch
import triton

from .fwd_hopper import attn_fwd_hopper


def _view(arg, t, functional, config):
    """[B, S, H, D] as the rule's TMA argument `arg` (rules_flash_hopper.py)
    describes it: the view [B, H, D/c, S, c], its block and its layout, so
    the JIT and the AOT launcher cannot build different descriptors."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, S, H, D = t.shape
    block = arg.block_shape(functional, config)
    cols = block[-1]  # 64, or 32 for head dim 96
    shape = [B, H, D // cols, S, cols]
    strides = [t.stride(0), t.stride(2), cols, t.stride(1), 1]
    return TensorDescriptor(t, shape, strides, block, arg.layout(functional, config))


def attn_fwd_hopper_jit(q, k, v, sm_scale, causal_type=0, config=None):
    """(out, lse) for batched q [B, Sq, Hq, D], k/v [B, Sk, Hk, D]; config:
    {BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps, maxnreg} (default: the rule's)."""
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    from kernel_rules import TmaArg
    from rules_flash_hopper import attn_fwd_hopper as rule

    functional = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[q.dtype], "BLOCK_DMODEL": D,
                  "CAUSAL_TYPE": causal_type}
    config = config or rule.tuning.default(functional, 90)
    descs = {a.name: a for a in rule.args if isinstance(a, TmaArg)}
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(Sq, config["BLOCK_M"]), B * Hq)
    attn_fwd_hopper[grid](
        *(_view(descs[n], t, functional, config) for n, t in (("q_desc", q), ("k_desc", k), ("v_desc", v))),
        out, lse, sm_scale,
        out.stride(0), out.stride(2), out.stride(1), lse.stride(0), lse.stride(1), Hq, Hk, Sq, Sk,
        BLOCK_DMODEL=D, CAUSAL_TYPE=causal_type, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        NUM_STAGES=config["NUM_STAGES"], SCHEDULE=config["SCHEDULE"], num_warps=config["num_warps"],
        **({"maxnreg": config["maxnreg"]} if config.get("maxnreg") else {}))
    return out, lse
