"""The Hopper (sm_90) MoE grouped GEMM: a warp-specialized Gluon kernel with
the expert weights read by TMA (tritonsrc/moe/grouped_gemm_hopper.py).
v2src/ops/moe_gemm_hopper.cc routes the calls it serves (fp16/bf16
unquantized, aligned, align block size 128, at least MIN_TOKENS_PER_EXPERT
slots per expert, N >= MIN_N, weights a TMA operand) to it on sm_90 and everything else
to fused_moe_gemm, when opted in with AOTRITON_MOE_HOPPER=1 (the tuned Triton
kernel measured faster at M=4096: bench/results/moe_sm90_hopper_gemm.json).

Measured on the H200 (bench/results/moe_gemm_gluon_experiment_sm90.json,
variant gluon_ws, 128x256x64, 4 stages; docs/notes-moe-perf.md), against
the Triton kernel at block size 128 (moe_gemm_experiment_sm90.json,
prod_bm128) in TF/s: Mixtral-like M=512 (128 slots per expert) GEMM1 468 vs
454, GEMM2 476 vs 465; M=4096 (1024 per expert) 685 vs 595-668, 769 vs
619-675; random routing M=512 416 vs 324; DeepSeek-like M=512 (16 per
expert) 70 vs 62; M=4096 (128 per expert) 506 vs 462-498, 458 vs 413-448.
4 stages beat 3 in every row (by 1-12%).
"""
from python.kernel_rules import Arg, AutotuneKey, Kernel, Tensor, TmaArg, TuningSpace
from tritonsrc.moe import configs as C

BLOCK_M = 128  # two consumer warpgroups of 64 rows; = the moe_align block size it serves
# Fewer slots per expert than the smallest measured gain (DeepSeek-like M=512:
# 16) stay with the Triton kernel (decode tiles, narrow N).
MIN_TOKENS_PER_EXPERT = 16
# Narrower outputs (unmeasured: every measured N was >= 4096) stay with the
# Triton kernel: a 256-wide tile wastes up to half of its work there.
MIN_N = 1024
SHARED_LIMIT = 227 * 1024


def _shared_bytes(c):
    return 2 * c["NUM_STAGES"] * c["BLOCK_K"] * (BLOCK_M + c["BLOCK_N"])


def _prune(f, c, arch):
    return _shared_bytes(c) <= SHARED_LIMIT


def _default(f, arch):
    """The experiment's best in every measured row (module doc)."""
    return {"BLOCK_M": BLOCK_M, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "NUM_STAGES": 4, "num_warps": 4}


def _valid(f, arch):
    """wgmma and setmaxnreg are sm_90a: no other arch (nor PTX JIT for a newer one) runs it."""
    return arch == 90


# The gathered tokens a [rows, K] and the output c [slots, N]: row strides, columns contiguous.
_A = Tensor("a_ptr", "{dtype}", "m", rank=2, align=16, stride="i32:16", prefix="stride_a")
_C = Tensor("c_ptr", "{dtype}", "m", rank=2, align=16, stride="i32:16", prefix="stride_c")

# One BLOCK_M x BLOCK_N tile per program (both Gluon MoE GEMMs), keyed as fused_moe_gemm's
# database: slots per expert, the GEMM's N and K.
GRID = ("cdiv(EM, BLOCK_M) * cdiv(N, BLOCK_N)", "1", "1")
AUTOTUNE_KEYS = [AutotuneKey("tokens_per_expert", bins=list(C.TOKENS_PER_EXPERT_BINS)),
                 AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))]

fused_moe_gemm_hopper = Kernel(
    name="fused_moe_gemm_hopper",
    source="tritonsrc/moe/grouped_gemm_hopper.py",
    function="fused_moe_gemm_hopper",
    args=[
        _A.ptr,
        # The weights [E, N, K] viewed as [E * N, K] (v2src/ops/moe_gemm_hopper.cc).
        TmaArg("b_desc", "{dtype}", ("BLOCK_N", "BLOCK_K")),
        _C.ptr, Arg("topk_weights_ptr", "*fp32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32:16"), Arg("K", "i32:16"), Arg("EM", "i32"), Arg("num_valid_tokens", "i32"),
        Arg("top_k", "i32"), *_A.strides, *_C.strides,
        Arg("num_experts", "i32"),  # expert ids outside [0, E) write zeros
    ],
    functional={"dtype": ["fp16", "bf16"], "MUL_ROUTED_WEIGHT": [False, True]},
    valid=_valid,
    profiles={"ci": lambda f: f["dtype"] == "fp16"},
    tuning=TuningSpace(
        params={"BLOCK_M": [BLOCK_M], "BLOCK_N": [128, 256], "BLOCK_K": [64], "GROUP_M": [8, 16],
                "NUM_STAGES": [3, 4, 5], "num_warps": [4]},
        default=_default,
        prune=_prune,
    ),
    grid=GRID,
    grid_args=["tokens_per_expert"],
    autotune_keys=AUTOTUNE_KEYS,
    doc="MoE grouped GEMM for sm_90 (Gluon: TMA weights, cp.async gathered tokens, warp-specialized wgmma)",
)

# The persistent form (tritonsrc/moe/grouped_gemm_hopper_persistent.py): the same tiles,
# one program per SM (the launcher passes the SM count as num_programs). Measured (JIT,
# bench/results/moe_gemm_persistent_sm90.json) faster than the per-tile form with 1024
# slots per expert (Mixtral-like M=4096: 0.92-0.98x torch._grouped_mm, from 0.83-0.89x)
# and slower with 128 (DeepSeek-like M=4096, random routing): the operator runs it from
# this many slots per expert, with AOTRITON_MOE_HOPPER=1 (its AOT route is not yet
# GPU-measured).
PERSISTENT_MIN_TOKENS_PER_EXPERT = 512

fused_moe_gemm_hopper_persistent = Kernel(
    name="fused_moe_gemm_hopper_persistent",
    source="tritonsrc/moe/grouped_gemm_hopper_persistent.py",
    function="fused_moe_gemm_hopper_persistent",
    args=fused_moe_gemm_hopper.args + [Arg("num_programs", "i32")],
    functional=fused_moe_gemm_hopper.functional,
    valid=_valid,
    profiles={"ci": lambda f: f["dtype"] == "fp16" and not f["MUL_ROUTED_WEIGHT"]},
    tuning=fused_moe_gemm_hopper.tuning,
    grid=("num_programs", "1", "1"),
    grid_args=["tokens_per_expert"],
    autotune_keys=AUTOTUNE_KEYS,
    doc="MoE grouped GEMM for sm_90, persistent (one program per SM walks the tiles; loads run across tiles)",
)

HOPPER_MOE_KERNELS = [fused_moe_gemm_hopper, fused_moe_gemm_hopper_persistent]
