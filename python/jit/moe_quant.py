"""JIT launchers of the MoE quantization modes beyond per-tensor / block fp8:
fp8 w8a8 per channel (per-token activation scales), int8 w8a16 and int4
w4a16 (weight-only, grouped_gemm_wq.py), and a fused_experts composition.
Used by the CPU interpreter tests, the GPU JIT tests and the tuner; each launch's
argument order, strides and grid come from the rules (python/rules_moe.py)
through python/jit_launch.py, as in the AOT build (v2src/ops/moe_gemm.cc).
"""
import torch

from python import rules_moe as R
from python.jit import moe as mj
from python.jit_launch import View, kernel_function, launch, prepare
from tritonsrc.moe.configs import (QUANT_FP8_CHANNEL, QUANT_INT4_W4A16, QUANT_INT8_W8A16, default_config,  # noqa: F401
                                   wq_default_config)

FP8 = torch.float8_e4m3fn
WEIGHT_BITS = {QUANT_INT8_W8A16: 8, QUANT_INT4_W4A16: 4}


def per_token_quant_fp8(x, block_m=4, block_k=256, num_warps=4):
    """x [M, K] -> (q fp8 [M, K], scales fp32 [M]) with one dynamic scale per row."""
    M, K = x.shape
    assert x.stride(1) == 1
    q = torch.empty(M, K, dtype=FP8, device=x.device)
    s = torch.empty(M, dtype=torch.float32, device=x.device)
    launch(R.per_token_quant_fp8, dict(x_ptr=View(x, m=0), q_ptr=View(q, m=0), s_ptr=s, M=M, K=K), {},
           dict(BLOCK_M=block_m, BLOCK_K=block_k, num_warps=num_warps))
    return q, s


def invoke_grouped_gemm_per_channel(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                                    a_scale, b_scale, mul_routed_weight=False):
    """fp8 a [rows, K] with a_scale fp32 [rows]; fp8 b [E, N, K] with b_scale fp32 [E, N]."""
    E, N, K = b.shape
    w = topk_weights if topk_weights is not None else a_scale
    config = dict(config)
    launch(R.fused_moe_gemm, dict(
        a_ptr=View(a, m=0), b_ptr=View(b, e=0, n=1), c_ptr=View(c, m=0), a_scale_ptr=View(a_scale, m=0, k=None),
        b_scale_ptr=View(b_scale, e=0, n=1, k=None), topk_weights_ptr=w, sorted_token_ids_ptr=sorted_ids,
        expert_ids_ptr=expert_ids, num_tokens_post_padded_ptr=ntpp, N=N, K=K, EM=sorted_ids.numel(),
        num_valid_tokens=c.shape[0], top_k=top_k, num_experts=E,
    ), dict(MUL_ROUTED_WEIGHT=mul_routed_weight, QUANT=QUANT_FP8_CHANNEL, ALIGNED=True,
            BLOCK_SIZE_M=config.pop("BLOCK_SIZE_M"), SPLIT_K=1), config)
    return c


def invoke_grouped_gemm_wq(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config, bits,
                           b_scale, b_zp=None, group_size=0, mul_routed_weight=False):
    """Weight-only GEMM. bits 8: b int8 [E, N, K], b_scale [E, N]; bits 4: b uint8
    [E, N, K // 2], b_scale [E, N, K // group_size], b_zp uint8 [E, cdiv(N, 2), K // group_size].
    config["SPLIT_K"] > 1: c is [slots * SPLIT_K, N], partial row slot * SPLIT_K + s."""
    grid, args, kwargs = grouped_gemm_wq_launch(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config,
                                                bits, b_scale, b_zp, group_size, mul_routed_weight)
    kernel_function(R.fused_moe_gemm_wq)[grid](*args, **kwargs)
    return c


def grouped_gemm_wq_launch(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, config, bits,
                           b_scale, b_zp=None, group_size=0, mul_routed_weight=False):
    """(grid, args, kwargs) of invoke_grouped_gemm_wq's launch (the tuner
    compiles configs ahead with fused_moe_wq_kernel.warmup)."""
    E, N, Kb = b.shape
    K = a.shape[1]
    assert b.dtype == (torch.int8 if bits == 8 else torch.uint8) and Kb == (K if bits == 8 else K // 2)
    assert bits == 8 or (K % 64 == 0 and group_size % 64 == 0), "int4: K and group_size must be multiples of 64"
    config = {"INT4_DOT": 0, **config}
    split_k = config.pop("SPLIT_K", 1)  # a functional: c has SPLIT_K partial rows per slot (grouped_gemm_wq.py)
    assert c.shape[0] % split_k == 0
    return prepare(R.fused_moe_gemm_wq,
                   _wq_values(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, b_scale, b_zp, group_size,
                              split_k),
                   dict(MUL_ROUTED_WEIGHT=mul_routed_weight, BLOCK_SIZE_M=config.pop("BLOCK_SIZE_M"),
                        SPLIT_K=split_k), config)


def _wq_values(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, b_scale, b_zp, group_size, split_k):
    """The weight-only GEMMs' arguments (fused_moe_gemm_wq and its sm_90 int4 form take the same)."""
    E, N, _ = b.shape
    bits = 8 if b.dtype == torch.int8 else 4
    return dict(
        a_ptr=View(a, m=0), b_ptr=View(b, e=0, n=1), c_ptr=View(c, m=0),
        b_scale_ptr=View(b_scale, e=0, n=1, k=2 if bits == 4 else None),
        b_zp_ptr=View(b_zp, e=0, n=1, k=2) if b_zp is not None else View(b, e=None, n=None, k=None),
        topk_weights_ptr=topk_weights if topk_weights is not None else b_scale, sorted_token_ids_ptr=sorted_ids,
        expert_ids_ptr=expert_ids, num_tokens_post_padded_ptr=ntpp, N=N, K=a.shape[1], EM=sorted_ids.numel(),
        num_valid_tokens=c.shape[0] // split_k, top_k=top_k, group_size=max(group_size, 1),
        has_zp=int(b_zp is not None), num_experts=E)


def wq_hopper_block_k(group_size):
    """The sm_90 int4 kernel's K tile for a group size, as v2src/ops/moe_gemm.cc picks it."""
    return 128 if group_size % 128 == 0 else 64


def invoke_grouped_gemm_wq_hopper(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, b_scale, b_zp,
                                  group_size, config=None, mul_routed_weight=False, split_k=1, block_k=None,
                                  block_m=16, x_dot_order=False):
    """The sm_90 int4 GEMM (tritonsrc/moe/grouped_gemm_wq_hopper.py) with the operator's arguments:
    b uint8 [E, N, K // 2], b_scale fp32 [E, N, K // group_size], b_zp [E, cdiv(N, 2), K //
    group_size] or None, align block size 16; c [slots * split_k, N]. config: the rule's tuning
    keys (those left out: the rule's default). block_k: the K tile (default the operator's; experiments
    may take any power of 2 from 64 to 256 that divides group_size, e.g. 256 for group 256, which
    the build does not compile). block_m: the align block size, 16 (the build's), 8 (wgmma N 8:
    96 registers instead of 127) or 32 (one block for an expert's 17-32 tokens: one dequantization
    of each weight tile instead of two); 8 and 32 for experiments only. x_dot_order: `a` is
    dot_order_activations(x, block_k) of the activations x, copied to shared memory as it is (an
    experiment: config LOAD_DISTANCE 2). Needs an sm_90 GPU."""
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    K = a.shape[1]
    block_k = block_k or wq_hopper_block_k(group_size)
    assert block_k in (64, 128, 256) and group_size % block_k == 0, (block_k, group_size)
    assert b.dtype == torch.uint8 and b.shape[2] * 2 == K and group_size % 64 == 0 and K % block_k == 0
    assert c.shape[0] % split_k == 0 and block_m in (8, 16, 32)
    if a.shape[0] == 0:
        return c  # no token: the kernel reads token 0's row for padding slots (as the operator, never launched)
    functional = dict(dtype={torch.float16: "fp16", torch.bfloat16: "bf16"}[a.dtype], b_dtype="u8",
                      MUL_ROUTED_WEIGHT=bool(mul_routed_weight), BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=block_k,
                      SPLIT_K=split_k, HAS_ZP=b_zp is not None, X_DOT_ORDER=bool(x_dot_order))
    config = {**rule.tuning.default(functional, 90), **(config or {})}  # keys left out: the default's
    constexprs = {k: v for k, v in functional.items() if k in rule.constexpr_functionals}
    launch(rule, _wq_values(a, b, c, topk_weights, sorted_ids, expert_ids, ntpp, top_k, b_scale, b_zp, group_size,
                            split_k), constexprs, config)
    return c


def dot_order_activations(x, block_k):
    """[M, K] activations -> the same rows with each K tile of block_k in the sm_90 int4 GEMM's dot
    order (the permutation its kernel applies in registers, grouped_gemm_wq_hopper.activation_perm),
    for invoke_grouped_gemm_wq_hopper(..., x_dot_order=True)."""
    from tritonsrc.moe import grouped_gemm_wq_hopper as kern

    M, K = x.shape
    assert K % block_k == 0
    tiles = x.reshape(M * (K // block_k), block_k).reshape(kern.bit_shape(M * (K // block_k), block_k))
    perm = kern.activation_perm(block_k, x.dtype == torch.float16)
    return tiles.permute(perm).reshape(M, K).contiguous()


def fused_experts_quant_jit(hidden, w1, w2, topk_weights, topk_ids, quant, w1_scale, w2_scale,
                            w1_zp=None, w2_zp=None, group_size=0, config=None, activation=mj.SILU):
    """mj.fused_experts_jit for QUANT_FP8_CHANNEL (w fp8, scales [E, N]) and the
    weight-only modes (w int8 [E, N, K] or packed uint8 [E, N, K // 2])."""
    M, H = hidden.shape
    E, N2 = w1.shape[:2]
    topk = topk_ids.shape[1]
    if config is None:
        config = (default_config(M, quant) if quant == QUANT_FP8_CHANNEL
                  else wq_default_config(M, WEIGHT_BITS[quant]))
    sorted_ids, expert_ids, ntpp = mj.moe_align_block_size(topk_ids, config["BLOCK_SIZE_M"], E)
    weights = topk_weights.to(torch.float32).contiguous()
    cache1 = torch.empty(M * topk, N2, dtype=hidden.dtype, device=hidden.device)
    cache3 = torch.empty(M * topk, H, dtype=hidden.dtype, device=hidden.device)
    common = (sorted_ids, expert_ids, ntpp)
    if quant == QUANT_FP8_CHANNEL:
        a1, a1s = per_token_quant_fp8(hidden)
        invoke_grouped_gemm_per_channel(a1, w1, cache1, None, *common, topk, config, a1s, w1_scale)
        a2, a2s = per_token_quant_fp8(mj.act_and_mul(cache1, activation))
        invoke_grouped_gemm_per_channel(a2, w2, cache3, weights, *common, 1, config, a2s, w2_scale,
                                        mul_routed_weight=True)
    else:
        bits = WEIGHT_BITS[quant]
        invoke_grouped_gemm_wq(hidden, w1, cache1, None, *common, topk, config, bits, w1_scale, w1_zp, group_size)
        act = mj.act_and_mul(cache1, activation)
        invoke_grouped_gemm_wq(act, w2, cache3, weights, *common, 1, config, bits, w2_scale, w2_zp, group_size,
                               mul_routed_weight=True)
    return mj.moe_sum(cache3.view(M, topk, H))


# ------------------------------------------------------------ weight packing
def quantize_int8_per_channel(w):
    """[E, N, K] float -> (int8 [E, N, K], fp32 scales [E, N]), symmetric."""
    s = (w.float().abs().amax(-1) / 127.0).clamp(min=1e-10)
    q = torch.round(w.float() / s[..., None]).clamp(-127, 127).to(torch.int8)
    return q, s


def quantize_int4_groups(w, group, with_zp):
    """[E, N, K] float -> (packed uint8 [E, N, K // 2], fp32 scales [E, N, K // group],
    zp uint8 [E, cdiv(N, 2), K // group] or None). Asymmetric with zero points
    (min/max per group), else symmetric around 8."""
    E, N, K = w.shape
    g = w.float().reshape(E, N, K // group, group)
    if with_zp:
        lo, hi = g.amin(-1), g.amax(-1)
        s = ((hi - lo) / 15.0).clamp(min=1e-10)
        zp = torch.round(-lo / s).clamp(0, 15)
    else:
        s = (g.abs().amax(-1) / 7.0).clamp(min=1e-10)
        zp = torch.full_like(s, 8.0)
    q = torch.round(g / s[..., None] + zp[..., None]).clamp(0, 15).to(torch.uint8).reshape(E, N, K)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).contiguous()
    zp_packed = None
    if with_zp:
        z = zp.to(torch.uint8)
        if N % 2:
            z = torch.cat([z, torch.zeros_like(z[:, :1])], 1)
        zp_packed = (z[:, 0::2] | (z[:, 1::2] << 4)).contiguous()
    return packed, s, zp_packed


def dequantize_int4_groups(packed, s, zp, group):
    """The exact float64 weights the int4 kernel multiplies by."""
    E, N, Kh = packed.shape
    q = torch.stack([packed & 0xF, packed >> 4], -1).reshape(E, N, 2 * Kh).double()
    if zp is not None:
        z = torch.stack([zp & 0xF, zp >> 4], 2).reshape(E, -1, zp.shape[-1])[:, :N].double()
    else:
        z = torch.full_like(s, 8.0, dtype=torch.float64)
    return (q - z.repeat_interleave(group, -1)) * s.double().repeat_interleave(group, -1)
