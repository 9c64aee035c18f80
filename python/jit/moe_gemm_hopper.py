"""JIT launcher for tritonsrc.moe.grouped_gemm_hopper.fused_moe_gemm_hopper
(the tuner, and JIT-vs-AOT tests): the same [E * N, K] TMA view of the
weights and the same arguments the AOT operator passes
(v2src/ops/moe_gemm_hopper.cc). Needs an sm_90 GPU."""
import triton

from tritonsrc.moe.grouped_gemm_hopper import fused_moe_gemm_hopper


def invoke_grouped_gemm_hopper(a, b, c, topk_weights, sorted_token_ids, expert_ids, num_tokens_post_padded, top_k,
                               config=None, mul_routed_weight=False):
    """c[s] = a[s // top_k] @ b[expert(s)]^T (* topk_weights[s]) for the slots of
    moe_align_block_size(..., block_size=128). a [rows, K], b [E, N, K] with its
    experts back to back, c [slots, N]; fp16 or bf16. config: {BLOCK_M, BLOCK_N,
    BLOCK_K, GROUP_M, NUM_STAGES, num_warps} (default: the rule's)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from python.kernel_rules import TmaArg
    from python.rules_moe_hopper import fused_moe_gemm_hopper as rule

    E, N, K = b.shape
    functional = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[b.dtype],
                  "MUL_ROUTED_WEIGHT": bool(mul_routed_weight)}
    config = config or rule.tuning.default(functional, 90)
    arg = next(x for x in rule.args if isinstance(x, TmaArg))
    assert E == 1 or b.stride(0) == N * b.stride(1), "the experts must lie back to back ([E * N, K] view)"
    b_desc = TensorDescriptor(b, [E * N, K], [b.stride(1), 1], arg.block_shape(functional, config),
                              arg.layout(functional, config))
    EM = sorted_token_ids.numel()
    grid = (triton.cdiv(EM, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]), )
    fused_moe_gemm_hopper[grid](
        a, b_desc, c, topk_weights if mul_routed_weight else c, sorted_token_ids, expert_ids, num_tokens_post_padded,
        N, K, EM, c.shape[0], top_k, a.stride(0), c.stride(0), E,
        MUL_ROUTED_WEIGHT=bool(mul_routed_weight), BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        BLOCK_K=config["BLOCK_K"], GROUP_M=config["GROUP_M"], NUM_STAGES=config["NUM_STAGES"],
        num_warps=config["num_warps"])
    return c
