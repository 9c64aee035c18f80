"""MoE kernel rules (see kernel_rules.py for the vocabulary)."""
from kernel_rules import Arg, AutotuneKey, Kernel, TuningSpace

FLOAT_DTYPES = ["fp16", "bf16", "fp32"]

# ----------------------------------------------------------------------------
# MoE element-wise kernels
# ----------------------------------------------------------------------------
act_and_mul = Kernel(
    name="act_and_mul",
    source="tritonsrc/moe/activation.py",
    function="act_and_mul_kernel",
    args=[
        Arg("out_ptr", "*{dtype}:16"),
        Arg("in_ptr", "*{dtype}:16"),
        Arg("n_rows", "i32"),
        Arg("n_cols", "i32"),
        Arg("stride_out_row", "i64"),
        Arg("stride_in_row", "i64"),
    ],
    functional={"dtype": FLOAT_DTYPES, "ACTIVATION": [0, 1, 2]},
    tuning=TuningSpace(
        params={"BLOCK": [256, 512, 1024, 2048], "num_warps": [2, 4, 8], "num_stages": [1]},
        default=lambda f, arch: {"BLOCK": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK"] // (32 * c["num_warps"]) <= 16,
    ),
    grid=("n_rows", "cdiv(n_cols, BLOCK)", "1"),
    autotune_keys=[AutotuneKey("n_cols", bins=[1024, 4096, 16384])],
    doc="act(gate) * up for silu / gelu / gelu-tanh",
)

moe_sum = Kernel(
    name="moe_sum",
    source="tritonsrc/moe/moe_sum.py",
    function="moe_sum_kernel",
    args=[
        Arg("out_ptr", "*{dtype}:16"),
        Arg("in_ptr", "*{dtype}:16"),
        Arg("n_tokens", "i32"),
        Arg("topk", "i32"),
        Arg("hidden", "i32"),
        Arg("stride_out_m", "i64"),
        Arg("stride_in_m", "i64"),
        Arg("stride_in_k", "i64"),
    ],
    functional={"dtype": FLOAT_DTYPES},
    tuning=TuningSpace(
        params={"BLOCK": [256, 512, 1024, 2048], "num_warps": [2, 4, 8], "num_stages": [1]},
        default=lambda f, arch: {"BLOCK": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK"] // (32 * c["num_warps"]) <= 16,
    ),
    grid=("n_tokens", "cdiv(hidden, BLOCK)", "1"),
    autotune_keys=[AutotuneKey("hidden", bins=[1024, 4096, 16384])],
    doc="sum over the top-k axis",
)

MOE_KERNELS = [act_and_mul, moe_sum]
MOE_CI = {}  # the element-wise kernels are cheap: ci compiles all of them
