"""The Hopper (sm_90) fp8 w8a8 MoE grouped GEMM: the warp-specialized Gluon
kernel of rules_moe_hopper.py on fp8 operands, with each K tile's product
promoted into fp32 by one warpgroup while the other's wgmma runs
(tritonsrc/moe/grouped_gemm_hopper_fp8.py).

v2src/ops/moe_gemm_hopper.cc routes fp8 calls it serves (aligned, align block
size 128, at least MIN_TOKENS_PER_EXPERT slots per expert, N >= MIN_N, weights
a TMA operand) to it on sm_90 by default (AOTRITON_MOE_HOPPER=0 keeps the Triton
kernel). Measured on the H200 against fused_moe_gemm's fp8 paths, JIT of the
build's kernel and defaults, same operands (bench/experiments/moe_fp8_gluon.py,
bench/results/moe_fp8_gluon_r4_sm90.json), TF/s at M=4096 (GEMM1 / GEMM2): per
tensor Mixtral-like 898 / 989 vs 769 / 800, DeepSeek-like 646 / 530 vs 518 / 475;
128x128 blocks 870 / 915 vs 691 / 695 and 625 / 526 vs 471 / 419 (bf16: 539 / 538
and 356 / 331).
"""
from python.kernel_rules import Arg, Kernel, Tensor, TmaArg, TuningSpace
from python.rules_moe_hopper import _C, AUTOTUNE_KEYS, BLOCK_M, GRID, SHARED_LIMIT, _valid
from tritonsrc.moe import configs as C

FP8_QUANTS = [C.QUANT_FP8_TENSOR, C.QUANT_FP8_BLOCK, C.QUANT_FP8_CHANNEL]
# The fewest slots per expert the automatic choice runs it for: the measured
# rows had 128 (DeepSeek-like M=4096) and 1024 (Mixtral-like M=4096).
MIN_TOKENS_PER_EXPERT = 128


def _shared_bytes(c):
    """The A and B rings (one byte per fp8 element) and the block scales' rings (fp32, a
    scale per row and per 128-column half), as grouped_gemm_hopper_fp8.py allocates them."""
    return c["NUM_STAGES"] * (c["BLOCK_K"] * (BLOCK_M + c["BLOCK_N"]) + 4 * (BLOCK_M + 2))


def _prune(f, c, arch):
    if f["QUANT"] == C.QUANT_FP8_BLOCK and c["BLOCK_K"] != 128:
        return False  # a block-scaled K tile is one scale group
    # 256-wide tiles keep two accumulators and a product (192 registers a thread).
    # ptxas spills (sm_90, triton 3.6.0, consumers at 216 registers) with block scales
    # from 4 stages on (3 stages measured 1.2x faster than 4 on the H200 besides). Per
    # channel fits since its epilogue scales and stores one half at a time.
    if c["BLOCK_N"] > 128 and f["QUANT"] == C.QUANT_FP8_BLOCK and c["NUM_STAGES"] > 3:
        return False
    return _shared_bytes(c) <= SHARED_LIMIT


def _default(f, arch):
    """128-byte K rows (the widest swizzle); 256-wide tiles (half the L2 traffic
    per FLOP of 128-wide ones): per tensor (4 x 48 KB stages) 1.15-1.16x the
    128-wide tile, block scales (3 stages) 1.18-1.22x, H200
    (bench/results/moe_fp8_gluon_r2_sm90.json, _r3_). Per channel as per tensor
    (the same main loop, no spills): predicted from those rows, not timed yet (at
    128 wide it was 1.14x the block path's time, H100,
    bench/results/h100/moe_coverage_sm90.json)."""
    stages = 3 if f["QUANT"] == C.QUANT_FP8_BLOCK else 4
    return {"BLOCK_M": BLOCK_M, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "NUM_STAGES": stages, "num_warps": 4}


_A = Tensor("a_ptr", "fp8e4nv", "m", rank=2, align=16, stride="i32:16", prefix="stride_a")  # c: as the bf16 kernel's

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
    profiles={"ci": lambda f: f["dtype"] == "bf16" and f["QUANT"] == C.QUANT_FP8_TENSOR},
    tuning=TuningSpace(
        params={"BLOCK_M": [BLOCK_M], "BLOCK_N": [128, 256], "BLOCK_K": [128], "GROUP_M": [8, 16],
                "NUM_STAGES": [3, 4, 5, 6], "num_warps": [4]},
        default=_default,
        prune=_prune,
    ),
    grid=GRID,
    grid_args=["tokens_per_expert"],
    autotune_keys=AUTOTUNE_KEYS,
    doc="fp8 w8a8 MoE grouped GEMM for sm_90 (Gluon: TMA weights, warp-specialized wgmma, overlapped fp32 promotion)",
)
