"""JIT launcher for tritonsrc.flash.fwd_hopper.attn_fwd_hopper (the tuner, and
JIT-vs-AOT tests). Needs an sm_90 GPU. The call (argument order, strides by
dim name, grid) comes from the rule (python/rules_flash_hopper.py) through
python/jit_launch.py; what is this kernel's own is the TMA descriptors, built
from the rule's TmaArgs over the same 5-D views the AOT operator passes
(v2src/ops/flash_fwd.cc)."""
import torch

from python.jit_launch import View, launch
from python.kernel_rules import TmaArg
from python.rules_flash_hopper import attn_fwd_hopper as RULE

# The kernel launched, looked up at each call: bench/experiments/hopper_repeat.py
# replaces it with a variant's.
from tritonsrc.flash.fwd_hopper import attn_fwd_hopper

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def _descriptor(arg, t, functional, config):
    """[B, S, H, D] as the rule's TMA argument `arg` describes it: the view
    [B, H, D/c, S, c], its block and its layout, so the JIT and the AOT
    launcher cannot build different descriptors."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, S, H, D = t.shape
    block = arg.block_shape(functional, config)
    cols = block[-1]  # 64, or 32 for head dim 96
    shape = [B, H, D // cols, S, cols]
    strides = [t.stride(0), t.stride(2), cols, t.stride(1), 1]
    return TensorDescriptor(t, shape, strides, block, arg.layout(functional, config))


def attn_fwd_hopper_jit(q, k, v, sm_scale, causal_type=0, config=None, out=None, lse=None):
    """(out, lse) for batched q [B, Sq, Hq, D], k/v [B, Sk, Hk, D]; config:
    {BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps, maxnreg} (default: the rule's);
    out / lse: tensors to write into (e.g. NaN-poisoned), else allocated."""
    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    functional = {"dtype": _DTYPE_NAMES[q.dtype], "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal_type}
    config = dict(config or RULE.tuning.default(functional, 90))
    descs = {a.name: a for a in RULE.args if isinstance(a, TmaArg)}
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32) if lse is None else lse
    launch(RULE, dict(
        **{n: _descriptor(descs[n], t, functional, config) for n, t in (("q_desc", q), ("k_desc", k), ("v_desc", v))},
        O=View(out, z=0, h=2, m=1), LSE=View(lse, z=0, h=1), sm_scale=sm_scale,
        num_heads_q=Hq, num_heads_k=Hk, seqlen_q=Sq, seqlen_k=Sk, num_seqs=B,
        num_sms=torch.cuda.get_device_properties(q.device).multi_processor_count,
    ), functional, config, fn=attn_fwd_hopper)
    return out, lse


def attn_fwd_hopper_varlen_jit(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sm_scale,
                               causal_type=0, config=None, out=None, lse=None):
    """(out, lse [Hq, total_q]) for packed q [total_q, Hq, D], k/v [total_k, Hk, D] through
    attn_fwd_hopper_varlen: the descriptors view each packed tensor as one batch of its rows, as
    v2src/ops/flash_fwd.cc does."""
    from python.rules_flash_hopper import attn_fwd_hopper_varlen as VRULE
    from tritonsrc.flash.fwd_hopper_varlen import attn_fwd_hopper_varlen

    Hq, D = q.shape[1], q.shape[2]
    functional = {"dtype": _DTYPE_NAMES[q.dtype], "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal_type}
    config = dict(config or VRULE.tuning.default(functional, 90))
    descs = {a.name: a for a in VRULE.args if isinstance(a, TmaArg)}
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty(Hq, q.shape[0], device=q.device, dtype=torch.float32) if lse is None else lse
    launch(VRULE, dict(
        **{n: _descriptor(descs[n], t.unsqueeze(0), functional, config)
           for n, t in (("q_desc", q), ("k_desc", k), ("v_desc", v))},
        O=View(out.unsqueeze(0), z=0, h=2, m=1), LSE=View(lse.unsqueeze(0), z=0, h=1), sm_scale=sm_scale,
        cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, num_heads_q=Hq, num_heads_k=k.shape[1],
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, total_q=q.shape[0], total_k=k.shape[0],
        num_seqs=cu_seqlens_q.numel() - 1,
    ), functional, config, fn=attn_fwd_hopper_varlen)
    return out, lse
