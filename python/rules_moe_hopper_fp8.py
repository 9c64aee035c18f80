"""The Hopper (sm_90) fp8 w8a8 MoE grouped GEMM: the warp-specialized Gluon
kernel of rules_moe_hopper.py on fp8 operands, with each K tile's product
promoted into fp32 by one warpgroup while the other's wgmma runs
(tritonsrc/moe/grouped_gemm_hopper_fp8.py).

Not in the build yet (rules.KERNELS): bench/experiments/moe_fp8_gluon.py times
it through the JIT against fused_moe_gemm's fp8 and bf16 paths first; the rule
is what the experiment, the compile test and a later build share.
"""
from python.kernel_rules import Arg, AutotuneKey, Kernel, Tensor, TmaArg, TuningSpace
from python.rules_moe_hopper import BLOCK_M, SHARED_LIMIT
from tritonsrc.moe import configs as C

FP8_QUANTS = [C.QUANT_FP8_TENSOR, C.QUANT_FP8_BLOCK, C.QUANT_FP8_CHANNEL]


def _shared_bytes(c):
    return c["NUM_STAGES"] * c["BLOCK_K"] * (BLOCK_M + c["BLOCK_N"])  # one byte per fp8 element


def _prune(f, c, arch):
    if f["QUANT"] == C.QUANT_FP8_BLOCK and c["BLOCK_K"] != 128:
        return False  # a block-scaled K tile is one scale group
    return _shared_bytes(c) <= SHARED_LIMIT


def _default(f, arch):
    """128-byte K rows (the widest swizzle), 256-wide tiles (half the L2 traffic
    per FLOP of 128-wide ones), the deepest ring that fits: 4 x 48 KB."""
    return {"BLOCK_M": BLOCK_M, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "NUM_STAGES": 4, "num_warps": 4}


def _valid(f, arch):
    return arch == 90  # wgmma and setmaxnreg are sm_90a


_A = Tensor("a_ptr", "fp8e4nv", "m", rank=2, align=16, stride="i32:16", prefix="stride_a")
_C = Tensor("c_ptr", "{dtype}", "m", rank=2, align=16, stride="i32:16", prefix="stride_c")

fused_moe_gemm_hopper_fp8 = Kernel(
    name="fused_moe_gemm_hopper_fp8",
    source="tritonsrc/moe/grouped_gemm_hopper_fp8.py",
    function="fused_moe_gemm_hopper_fp8",
    args=[
        _A.ptr,
        TmaArg("b_desc", "fp8e4nv", ("BLOCK_N", "BLOCK_K")),  # weights [E, N, K] as [E * N, K]
        _C.ptr, Arg("a_scale_ptr", "*fp32"), Arg("b_scale_ptr", "*fp32"), Arg("topk_weights_ptr", "*fp32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32:16"), Arg("K", "i32:16"), Arg("EM", "i32"), Arg("num_valid_tokens", "i32"),
        Arg("top_k", "i32"), *_A.strides, *_C.strides,
        # Scale strides by QUANT (grouped_gemm_hopper_fp8.py); 0 where unused.
        Arg("stride_asm", "i32"), Arg("stride_ask", "i32"), Arg("stride_bse", "i32"), Arg("stride_bsn", "i32"),
        Arg("stride_bsk", "i32"),
        Arg("num_experts", "i32"),
    ],
    functional={"dtype": ["bf16", "fp16"], "QUANT": FP8_QUANTS, "MUL_ROUTED_WEIGHT": [False, True]},
    valid=_valid,
    tuning=TuningSpace(
        params={"BLOCK_M": [BLOCK_M], "BLOCK_N": [128, 256], "BLOCK_K": [128], "GROUP_M": [8, 16],
                "NUM_STAGES": [3, 4, 5, 6], "num_warps": [4]},
        default=_default,
        prune=_prune,
    ),
    grid=("cdiv(EM, BLOCK_M) * cdiv(N, BLOCK_N)", "1", "1"),
    grid_args=["tokens_per_expert"],
    autotune_keys=[AutotuneKey("tokens_per_expert", bins=list(C.TOKENS_PER_EXPERT_BINS)),
                   AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))],
    doc="fp8 w8a8 MoE grouped GEMM for sm_90 (Gluon: TMA weights, warp-specialized wgmma, overlapped fp32 promotion)",
)
