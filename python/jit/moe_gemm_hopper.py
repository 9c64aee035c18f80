"""JIT launcher for tritonsrc.moe.grouped_gemm_hopper.fused_moe_gemm_hopper
(the tuner, and JIT-vs-AOT tests): the same [E * N, K] TMA view of the
weights and the same arguments the AOT operator passes
(v2src/ops/moe_gemm_hopper.cc). Needs an sm_90 GPU."""
import triton

from tritonsrc.moe.grouped_gemm_hopper import fused_moe_gemm_hopper


def _weights_descriptor(rule, functional, config, b):
    """The weights [E, N, K] as the operator's TMA view [E * N, K], with the rule's box and swizzle."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from python.kernel_rules import TmaArg

    E, N, K = b.shape
    arg = next(x for x in rule.args if isinstance(x, TmaArg))
    assert E == 1 or b.stride(0) == N * b.stride(1), "the experts must lie back to back ([E * N, K] view)"
    return TensorDescriptor(b, [E * N, K], [b.stride(1), 1], arg.block_shape(functional, config),
                            arg.layout(functional, config))


def invoke_grouped_gemm_hopper(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, top_k,
                               config=None, mul_routed_weight=False, num_programs=0):
    """c[s] = a[s // top_k] @ b[expert(s)]^T (* topk_weights[s]) for the slots of
    moe_align_block_size(..., block_size=128). a [rows, K], b [E, N, K] with its
    experts back to back, c [slots, N]; fp16 or bf16. config: {BLOCK_M, BLOCK_N,
    BLOCK_K, GROUP_M, NUM_STAGES, num_warps} (default: the rule's). num_programs 0:
    one tile per program; None (one per SM, as the operator launches it) or n: the
    persistent form (tritonsrc/moe/grouped_gemm_hopper_persistent.py)."""
    import torch
    # The rules under other names: fused_moe_gemm_hopper is the Gluon kernel here (a shadowing
    # import made the launcher subscript the rule, 2026-12-05).
    from python import rules_moe_hopper
    from tritonsrc.moe.grouped_gemm_hopper_persistent import fused_moe_gemm_hopper_persistent as persistent

    E, N, K = b.shape
    rule = (rules_moe_hopper.fused_moe_gemm_hopper if num_programs == 0
            else rules_moe_hopper.fused_moe_gemm_hopper_persistent)
    functional = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[b.dtype],
                  "MUL_ROUTED_WEIGHT": bool(mul_routed_weight)}
    config = config or rule.tuning.default(functional, 90)
    b_desc = _weights_descriptor(rule, functional, config, b)
    EM = sorted_token_ids.numel()
    kernel, extra = fused_moe_gemm_hopper, ()
    grid = (triton.cdiv(EM, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]), )
    if num_programs != 0:
        num_programs = num_programs or torch.cuda.get_device_properties(a.device).multi_processor_count
        kernel, extra, grid = persistent, (num_programs, ), (num_programs, )
    kernel[grid](
        a, b_desc, c, topk_weights if mul_routed_weight else c, sorted_token_ids, expert_ids, num_tokens_post_padded,
        N, K, EM, c.shape[0], top_k, a.stride(0), c.stride(0), E, *extra,
        MUL_ROUTED_WEIGHT=bool(mul_routed_weight), BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"], NUM_STAGES=config["NUM_STAGES"],
        num_warps=config["num_warps"])
    return c


def invoke_grouped_gemm_hopper_persistent(a, b, c, topk_weights, sorted_token_ids, expert_ids,
                                          num_tokens_post_padded, top_k, config=None, mul_routed_weight=False,
                                          num_programs=None):
    """The persistent form (num_programs programs, default one per SM) of invoke_grouped_gemm_hopper."""
    return invoke_grouped_gemm_hopper(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded,
                                      top_k, config, mul_routed_weight, num_programs)


def invoke_grouped_gemm_hopper_fp8(a, b, c, a_scale, b_scale, topk_weights, sorted_token_ids, expert_ids,
                                   num_tokens_post_padded, top_k, quant, config=None, mul_routed_weight=False,
                                   num_programs=0):
    """The fp8 w8a8 form (tritonsrc/moe/grouped_gemm_hopper_fp8.py): a, b fp8
    e4m3, c bf16/fp16; scales as fused_moe_kernel takes them for `quant`
    (1: a [1], b [E]; 2: a [rows, cdiv(K, 128)], b [E, cdiv(N, 128), cdiv(K, 128)];
    3: a [rows], b [E, N]). config: the rule's keys (default: the rule's).
    num_programs > 0: its persistent form (grouped_gemm_hopper_fp8_persistent.py, an
    experiment: no AOT rule yet) with that many programs; None: one per SM."""
    import torch
    from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8 as rule
    from tritonsrc.moe.grouped_gemm_hopper_fp8 import fused_moe_gemm_hopper_fp8
    from tritonsrc.moe.grouped_gemm_hopper_fp8_persistent import fused_moe_gemm_hopper_fp8_persistent

    E, N, K = b.shape
    functional = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[c.dtype], "QUANT": int(quant),
                  "MUL_ROUTED_WEIGHT": bool(mul_routed_weight)}
    config = config or rule.tuning.default(functional, 90)
    b_desc = _weights_descriptor(rule, functional, config, b)
    if quant == 2:
        s_a, s_b = (a_scale.stride(0), a_scale.stride(1)), (b_scale.stride(0), b_scale.stride(1), b_scale.stride(2))
    elif quant == 3:
        s_a, s_b = (a_scale.stride(0), 0), (b_scale.stride(0), b_scale.stride(1), 0)
    else:
        s_a, s_b = (0, 0), (b_scale.stride(0) if b_scale.numel() == E and E > 1 else 0, 0, 0)
    EM = sorted_token_ids.numel()
    grid = (triton.cdiv(EM, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]), )
    kernel, extra = fused_moe_gemm_hopper_fp8, ()
    if num_programs != 0:
        num_programs = num_programs or torch.cuda.get_device_properties(a.device).multi_processor_count
        kernel, extra, grid = fused_moe_gemm_hopper_fp8_persistent, (num_programs, ), (num_programs, )
    kernel[grid](
        a, b_desc, c, a_scale, b_scale, topk_weights if mul_routed_weight else a_scale, sorted_token_ids, expert_ids,
        num_tokens_post_padded, N, K, EM, c.shape[0], top_k, a.stride(0), c.stride(0), *s_a, *s_b, E, *extra,
        QUANT=int(quant), MUL_ROUTED_WEIGHT=bool(mul_routed_weight), BLOCK_M=config["BLOCK_M"],
        BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"],
        NUM_STAGES=config["NUM_STAGES"], num_warps=config["num_warps"])
    return c
