"""MoE kernel rules (see kernel_rules.py for the vocabulary)."""
from python.kernel_rules import Arg, AutotuneKey, Kernel, Tensor, TuningSpace
from tritonsrc.moe import configs as C

FLOAT_DTYPES = ["fp16", "bf16", "fp32"]

# ----------------------------------------------------------------------------
# MoE element-wise kernels
# ----------------------------------------------------------------------------
def _rows(name, prefix, dims=("row",), dtype="{dtype}", align=16, stride="i64"):
    """A row-major 2-d (or 3-d) activation: the listed dims' strides, columns contiguous."""
    return Tensor(name, dtype, dims, rank=len(dims) + 1, align=align, stride=stride, prefix=prefix)


_ACT_OUT, _ACT_IN = _rows("out_ptr", "stride_out_"), _rows("in_ptr", "stride_in_")

act_and_mul = Kernel(
    name="act_and_mul",
    source="tritonsrc/moe/activation.py",
    function="act_and_mul_kernel",
    pdl=True,
    args=[
        _ACT_OUT.ptr,
        _ACT_IN.ptr,
        Arg("n_rows", "i32"),
        Arg("n_cols", "i32"),
        *_ACT_OUT.strides,
        *_ACT_IN.strides,
    ],
    functional={"dtype": FLOAT_DTYPES, "ACTIVATION": [0, 1, 2, 3]},  # 3: swigluoai (activation.py)
    tuning=TuningSpace(
        params={"BLOCK": [256, 512, 1024, 2048], "num_warps": [2, 4, 8], "num_stages": [1]},
        default=lambda f, arch: {"BLOCK": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK"] // (32 * c["num_warps"]) <= 16,
    ),
    grid=("n_rows", "cdiv(n_cols, BLOCK)", "1"),
    autotune_keys=[AutotuneKey("n_cols", bins=[1024, 4096, 16384])],
    doc="act(gate) * up for silu / gelu / gelu-tanh / gpt-oss swigluoai",
)

_SUM_OUT, _SUM_IN = _rows("out_ptr", "stride_out_", "m"), _rows("in_ptr", "stride_in_", "mk")  # in: [M, topk, H]

moe_sum = Kernel(
    name="moe_sum",
    source="tritonsrc/moe/moe_sum.py",
    function="moe_sum_kernel",
    pdl=True,
    args=[
        _SUM_OUT.ptr,
        _SUM_IN.ptr,
        Arg("topk_ids_ptr", "*i32"),  # read only with rows_per_slot > 0 (fused_experts)
        Arg("expert_map_ptr", "*i32"),
        Arg("n_tokens", "i32"),
        Arg("topk", "i32"),
        Arg("hidden", "i32"),
        Arg("rows_per_slot", "i32"),
        Arg("num_experts", "i32"),
        Arg("expert_map_len", "i32"),
        *_SUM_OUT.strides,
        *_SUM_IN.strides,
    ],
    functional={"dtype": FLOAT_DTYPES},
    tuning=TuningSpace(
        params={"BLOCK": [256, 512, 1024, 2048], "BLOCK_R": [2, 4, 8], "num_warps": [2, 4, 8], "num_stages": [1]},
        # BLOCK_R 4: decode's ~8 rows in two loads, prefill's top-2 without 6 masked rows (moe_sum.py).
        default=lambda f, arch: {"BLOCK": 1024, "BLOCK_R": 4, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK"] * c["BLOCK_R"] // (32 * c["num_warps"]) <= 64,
    ),
    grid=("n_tokens", "cdiv(hidden, BLOCK)", "1"),
    autotune_keys=[AutotuneKey("hidden", bins=[1024, 4096, 16384])],
    doc="sum over the top-k axis (in fused_experts: skipping dropped slots' rows)",
)


# ----------------------------------------------------------------------------
# Routing: top-k softmax and moe_align_block_size
# ----------------------------------------------------------------------------
TOPK_BLOCK_E = [8, 16, 32, 64, 128, 256, 512]   # max(8, next_pow2(num_experts))
ALIGN_BLOCK_E = [16, 32, 64, 128, 256, 512]     # max(16, next_pow2(num_experts))
_ONE_STAGE = {"num_stages": [1]}


def _topk_prune(f, c, arch):
    elems = c["BLOCK_M"] * f["BLOCK_E"]
    return 32 * c["num_warps"] <= max(elems, 32) and elems <= 8192


# Router logits [M, E] (any strides), top-k weights and ids [M, topk], columns contiguous.
_LOGITS = _rows("logits_ptr", "stride_l", "me", align=0, stride="i32")
_TOPK_W = _rows("topk_weights_ptr", "stride_w", "m", dtype="fp32", align=0, stride="i32")
_TOPK_IDS = _rows("topk_ids_ptr", "stride_i", "m", dtype="i32", align=0, stride="i32")

topk_softmax = Kernel(
    name="topk_softmax",
    source="tritonsrc/moe/topk_softmax.py",
    function="topk_softmax_kernel",
    pdl=True,
    args=[
        _LOGITS.ptr, _TOPK_W.ptr, _TOPK_IDS.ptr,
        Arg("num_tokens", "i32"), Arg("num_experts", "i32"), Arg("topk", "i32"),
        *_LOGITS.strides, *_TOPK_W.strides, *_TOPK_IDS.strides,
    ],
    functional={"dtype": FLOAT_DTYPES, "RENORMALIZE": [False, True], "BLOCK_E": TOPK_BLOCK_E},
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8, 16, 32, 64, 128], "num_warps": [1, 2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: C.topk_default(f["BLOCK_E"]),
        prune=_topk_prune,
    ),
    grid=("cdiv(num_tokens, BLOCK_M)", "1", "1"),
    autotune_keys=[AutotuneKey("num_tokens", bins=[64, 1024, 8192])],
    doc="router softmax + top-k",
)

_ALIGN_IDS = [Arg("topk_ids_ptr", "*i32"), Arg("expert_map_ptr", "*i32")]
_ALIGN_FUNCTIONAL = {"HAS_EXPERT_MAP": [False, True], "BLOCK_E": ALIGN_BLOCK_E}

moe_align_count = Kernel(
    name="moe_align_count",
    source="tritonsrc/moe/align.py",
    function="moe_align_count_kernel",
    pdl=True,
    args=_ALIGN_IDS + [
        Arg("chunk_counts_ptr", "*i32"), Arg("sorted_token_ids_ptr", "*i32"),
        Arg("numel", "i32"), Arg("num_experts", "i32"), Arg("max_num_tokens_padded", "i32"),
        Arg("expert_map_len", "i32"),
    ],
    # BLOCK_T is functional: the scan and scatter launches must use the same chunking.
    functional={**_ALIGN_FUNCTIONAL, "BLOCK_T": [C.ALIGN_BLOCK_T]},
    tuning=TuningSpace(params={"num_warps": [2, 4, 8], **_ONE_STAGE},
                       default=lambda f, arch: {"num_warps": 4, "num_stages": 1}),
    grid=("cdiv(numel, BLOCK_T)", "1", "1"),
    doc="moe_align step 1: per-chunk expert histogram, sentinel fill",
)

moe_align_scan = Kernel(
    name="moe_align_scan",
    source="tritonsrc/moe/align.py",
    function="moe_align_scan_kernel",
    pdl=True,
    # The counts are int32; the dtype functional only names the single variant.
    args=[Arg("chunk_counts_ptr", "*{dtype}"), Arg("expert_counts_ptr", "*{dtype}"),
          Arg("num_chunks", "i32"), Arg("num_experts", "i32")],
    functional={"dtype": ["i32"]},
    tuning=TuningSpace(
        params={"BLOCK_EG": [16, 32, 64, 128], "BLOCK_C": [8, 16, 32, 64], "num_warps": [2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_EG": 32, "BLOCK_C": 32, "num_warps": 4, "num_stages": 1},
    ),
    grid=("cdiv(num_experts, BLOCK_EG)", "1", "1"),
    doc="moe_align step 2: per-expert prefix over chunks",
)

moe_align_offsets = Kernel(
    name="moe_align_offsets",
    source="tritonsrc/moe/align.py",
    function="moe_align_offsets_kernel",
    pdl=True,
    args=[Arg("expert_counts_ptr", "*i32"), Arg("expert_starts_ptr", "*i32"),
          Arg("num_tokens_post_padded_ptr", "*i32"), Arg("num_experts", "i32"), Arg("block_size", "i32")],
    functional={"BLOCK_E": ALIGN_BLOCK_E},
    tuning=TuningSpace(params={"num_warps": [1, 2, 4], **_ONE_STAGE},
                       default=lambda f, arch: {"num_warps": 4, "num_stages": 1}),
    grid=("1", "1", "1"),
    doc="moe_align step 3: padded expert starts",
)

_BLOCK_B = [8, 16, 32, 64, 128]

moe_align_scatter = Kernel(
    name="moe_align_scatter",
    source="tritonsrc/moe/align.py",
    function="moe_align_scatter_kernel",
    pdl=True,
    args=_ALIGN_IDS + [
        Arg("chunk_counts_ptr", "*i32"), Arg("expert_starts_ptr", "*i32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("numel", "i32"), Arg("num_experts", "i32"), Arg("block_size", "i32"), Arg("num_blocks_total", "i32"),
        Arg("expert_map_len", "i32"),
    ],
    functional={**_ALIGN_FUNCTIONAL, "BLOCK_T": [C.ALIGN_BLOCK_T]},
    tuning=TuningSpace(
        params={"BLOCK_B": _BLOCK_B, "num_warps": [2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_B": C.align_block_b(f["BLOCK_E"]), "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_B"] * f["BLOCK_E"] <= 8192,
    ),
    grid=("cdiv(numel, BLOCK_T)", "1", "1"),
    doc="moe_align step 4: scatter slots, expert ids",
)

moe_align_small = Kernel(
    name="moe_align_small",
    source="tritonsrc/moe/align.py",
    function="moe_align_small_kernel",
    pdl=True,
    args=_ALIGN_IDS + [
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("numel", "i32"), Arg("num_experts", "i32"), Arg("block_size", "i32"),
        Arg("max_num_tokens_padded", "i32"), Arg("num_blocks_total", "i32"), Arg("expert_map_len", "i32"),
    ],
    functional={**_ALIGN_FUNCTIONAL, "BLOCK_T": list(C.ALIGN_SMALL_BLOCK_T)},
    tuning=TuningSpace(
        params={"BLOCK_B": _BLOCK_B, "num_warps": [4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_B": C.align_block_b(f["BLOCK_E"]),
                                 "num_warps": C.align_small_warps(f["BLOCK_T"]), "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_B"] * f["BLOCK_E"] <= 8192,
    ),
    grid=("1", "1", "1"),
    doc="moe_align in one launch (numel <= BLOCK_T)",
)

# ----------------------------------------------------------------------------
# Grouped GEMM (fused_moe_kernel)
# ----------------------------------------------------------------------------
def _fp8_ok(arch):
    return arch >= 89


def _aligned_ok(f):
    # ALIGNED (shapes and strides) without ALIGNED16 (16-byte base pointers)
    # vectorizes nothing: the operator folds the pointers into ALIGNED.
    return f["ALIGNED16"] or not f["ALIGNED"]


# The per-channel fp8 mode is built for aligned shapes and the block sizes the
# operator picks (16, 64, 128) only: every FP8-dynamic checkpoint is aligned,
# and each full set of variants costs cubins (compile time).
_PER_CHANNEL_BLOCK_M = (16, 64, 128)


def _gemm_valid(f, arch):
    if not _aligned_ok(f):
        return False
    if f["QUANT"] == C.QUANT_FP8_CHANNEL and not (f["ALIGNED"] and f["BLOCK_SIZE_M"] in _PER_CHANNEL_BLOCK_M):
        return False
    if f["SPLIT_K"] != 1 and not (f["ALIGNED"] and f["BLOCK_SIZE_M"] == 16 and f["MUL_ROUTED_WEIGHT"]
                                  and f["QUANT"] != C.QUANT_NONE):
        # split-K: the fp8 decode GEMM2 (aligned, 16-row blocks, routed weight) only; 16-bit
        # weights carry twice the bytes per tile and were at 0.94 of the roofline unsplit.
        return False
    if f["QUANT"] == C.QUANT_NONE:
        return f["ab_dtype"] == f["c_dtype"]
    return f["ab_dtype"] == "fp8e4nv" and _fp8_ok(arch)


def _gemm_smem(f, c):
    elem = 1 if f["ab_dtype"] == "fp8e4nv" else 2
    return c["num_stages"] * elem * c["BLOCK_SIZE_K"] * (f["BLOCK_SIZE_M"] + c["BLOCK_SIZE_N"])


def _gemm_prune(f, c, arch):
    if f["QUANT"] == C.QUANT_FP8_BLOCK and c["BLOCK_SIZE_K"] > 128:
        return False  # a K tile must sit inside one 128-wide scale group
    # Keeps the tune profile to what can matter: decode tiles (BLOCK_SIZE_M <= 32)
    # group 1 or 16 (16: an expert's several M blocks run next to each other and
    # read each weight tile once from DRAM, the rest from L2; random routing at
    # M=64 gives Mixtral-like layers 10-12 blocks for 8 experts), tall tiles 8-32,
    # 8 warps only from BLOCK_SIZE_M 64, small tiles for the scalar fallback.
    if f["BLOCK_SIZE_M"] <= 32:
        if c["GROUP_SIZE_M"] not in (1, 16):
            return False
    elif c["GROUP_SIZE_M"] == 1:
        return False
    if c["num_warps"] == 8 and f["BLOCK_SIZE_M"] < 64:
        return False
    if not f["ALIGNED"] and (c["BLOCK_SIZE_K"] > 64 or c["BLOCK_SIZE_N"] > 128 or c["num_stages"] > 3):
        return False
    return _gemm_smem(f, c) <= (227 if arch >= 90 else 163) * 1024


# A [M, K] (or [M * top_k, K]), B [E, N, K], C [M * top_k, N]: the innermost dim
# contiguous; scales [M, K / 128] and [E, N / 128, K / 128] (or per-tensor/channel).
_GEMM_A = _rows("a_ptr", "stride_a", "m", dtype="{ab_dtype}", stride="i32")
_GEMM_B = _rows("b_ptr", "stride_b", "en", dtype="{ab_dtype}", stride="i32")
_GEMM_C = _rows("c_ptr", "stride_c", "m", dtype="{c_dtype}", stride="i32")
_GEMM_A_SCALE = Tensor("a_scale_ptr", "fp32", "mk", rank=2, prefix="stride_as")
_GEMM_B_SCALE = Tensor("b_scale_ptr", "fp32", "enk", rank=3, prefix="stride_bs")

fused_moe_gemm = Kernel(
    name="fused_moe_gemm",
    source="tritonsrc/moe/grouped_gemm.py",
    function="fused_moe_kernel",
    pdl=True,
    args=[
        _GEMM_A.ptr, _GEMM_B.ptr, _GEMM_C.ptr,
        _GEMM_A_SCALE.ptr, _GEMM_B_SCALE.ptr, Arg("topk_weights_ptr", "*fp32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32"), Arg("K", "i32"), Arg("EM", "i32"), Arg("num_valid_tokens", "i32"), Arg("top_k", "i32"),
        *_GEMM_A.strides, *_GEMM_B.strides, *_GEMM_C.strides,
        *_GEMM_A_SCALE.strides,
        *_GEMM_B_SCALE.strides,
        Arg("num_experts", "i32"),  # expert ids outside [0, E) write zeros
    ],
    functional={
        "ab_dtype": ["fp16", "bf16", "fp8e4nv"],
        "c_dtype": ["fp16", "bf16"],
        "QUANT": [C.QUANT_NONE, C.QUANT_FP8_TENSOR, C.QUANT_FP8_BLOCK, C.QUANT_FP8_CHANNEL],
        "MUL_ROUTED_WEIGHT": [False, True],
        "ALIGNED": [False, True],
        # = the moe_align block size, chosen by the operator from M (configs.block_size_m).
        "BLOCK_SIZE_M": list(C.BLOCK_SIZES_M),
        # Split-K of the decode GEMM2 (grouped_gemm.py; v2src/ops/moe_fused.cc split_k_for).
        "SPLIT_K": [1, C.GEMM_SPLIT_K],
    },
    unaligned_variant=True,
    valid=_gemm_valid,
    tuning=TuningSpace(
        # Decode: BLOCK_SIZE_M 16/32 with narrow N tiles (more CTAs over N) and deep
        # K pipelines; prefill on sm_90: wgmma tiles up to 128x256, 3-5 stages.
        params={"BLOCK_SIZE_N": [32, 64, 128, 256], "BLOCK_SIZE_K": [64, 128, 256],
                "GROUP_SIZE_M": [1, 8, 16, 32], "num_warps": [4, 8], "num_stages": [2, 3, 4, 5]},
        default=lambda f, arch: C.gemm_default(f["BLOCK_SIZE_M"], f["QUANT"], f["ALIGNED"], arch),
        prune=_gemm_prune,
    ),
    grid=("cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N)", "SPLIT_K", "1"),
    # The tuning database (python/tune.py moe) is keyed on the layer's shape: slots
    # per local expert (cdiv(M * top_k, E), set by the operator), N and K. The
    # defaults (configs.gemm_default) do not depend on them.
    grid_args=["tokens_per_expert"],
    autotune_keys=[AutotuneKey("tokens_per_expert", bins=list(C.TOKENS_PER_EXPERT_BINS)),
                   AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))],
    doc="grouped GEMM over experts (vLLM fused_moe_kernel)",
)

# ----------------------------------------------------------------------------
# fp8 activation quantization and the fused operator's helpers
# ----------------------------------------------------------------------------
def _quant_valid(f, arch):
    return _fp8_ok(arch) and _aligned_ok(f)


# x [M, K] -> q fp8 [M, K], scales [M, K / GROUP]; rows strided, columns contiguous.
_QX = _rows("x_ptr", "stride_x", "m", stride="i32")
_QQ = _rows("q_ptr", "stride_q", "m", dtype="fp8e4nv", stride="i32")
_QS = Tensor("s_ptr", "fp32", "mk", rank=2)
# Rows 16-element aligned: these kernels read whole 16-byte vectors.
_QX16 = _rows("x_ptr", "stride_x", "m", stride="i32:16")
_QQ16 = _rows("q_ptr", "stride_q", "m", dtype="fp8e4nv", stride="i32:16")

per_token_group_quant_fp8 = Kernel(
    name="per_token_group_quant_fp8",
    source="tritonsrc/moe/quant.py",
    function="per_token_group_quant_fp8_kernel",
    pdl=True,
    args=[
        _QX.ptr, _QQ.ptr, _QS.ptr,
        Arg("M", "i32"), Arg("K", "i32"), *_QX.strides, *_QQ.strides,
        *_QS.strides,
    ],
    functional={"dtype": FLOAT_DTYPES, "GROUP": [128], "ALIGNED": [False, True]},
    unaligned_variant=True,
    valid=_quant_valid,
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8, 16, 32], "num_warps": [1, 2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_M": 8, "num_warps": 4, "num_stages": 1},
    ),
    grid=("cdiv(M, BLOCK_M)", "cdiv(K, GROUP)", "1"),
    autotune_keys=[AutotuneKey("M", bins=[64, 1024, 16384])],
    doc="fp8 e4m3 quantization, one scale per row and 128 columns",
)

per_tensor_quant_fp8 = Kernel(
    name="per_tensor_quant_fp8",
    source="tritonsrc/moe/quant.py",
    function="per_tensor_quant_fp8_kernel",
    pdl=True,
    args=[
        _QX.ptr, _QQ.ptr, Arg("scale_ptr", "*fp32"),
        Arg("M", "i32"), Arg("K", "i32"), *_QX.strides, *_QQ.strides,
    ],
    functional={"dtype": FLOAT_DTYPES, "ALIGNED": [False, True]},
    unaligned_variant=True,
    valid=_quant_valid,
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8, 16], "BLOCK_K": [128, 256, 512, 1024], "num_warps": [1, 2, 4, 8],
                **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_M": 4, "BLOCK_K": 512, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_M"] * c["BLOCK_K"] <= 8192,
    ),
    grid=("cdiv(M, BLOCK_M)", "cdiv(K, BLOCK_K)", "1"),
    autotune_keys=[AutotuneKey("M", bins=[64, 1024, 16384])],
    doc="fp8 e4m3 quantization with one device-side scale",
)

fp8_amax_partial = Kernel(
    name="fp8_amax_partial",
    source="tritonsrc/moe/fused_helpers.py",
    function="fp8_amax_partial_kernel",
    pdl=True,
    args=[_QX16.ptr, Arg("partial_ptr", "*fp32"), Arg("M", "i32"), Arg("K", "i32:16"),
          *_QX16.strides, Arg("num_partials", "i32")],
    functional={"dtype": FLOAT_DTYPES},
    unaligned_variant=True,
    valid=lambda f, arch: _fp8_ok(arch),
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8], "BLOCK_K": [256, 512, 1024, 2048], "num_warps": [4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_M": 2, "BLOCK_K": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_M"] * c["BLOCK_K"] <= 4096,
    ),
    grid=("num_partials", "1", "1"),
    doc="dynamic per-tensor fp8 scale, step 1: partial max |x|",
)

fp8_scale_from_amax = Kernel(
    name="fp8_scale_from_amax",
    source="tritonsrc/moe/fused_helpers.py",
    function="fp8_scale_from_amax_kernel",
    pdl=True,
    args=[Arg("partial_ptr", "*{dtype}"), Arg("scale_ptr", "*fp32"), Arg("num_partials", "i32")],
    functional={"dtype": ["fp32"]},
    valid=lambda f, arch: _fp8_ok(arch),
    tuning=TuningSpace(params={"BLOCK": [256, 1024], "num_warps": [4], **_ONE_STAGE},
                       default=lambda f, arch: {"BLOCK": 1024, "num_warps": 4, "num_stages": 1}),
    grid=("1", "1", "1"),
    doc="dynamic per-tensor fp8 scale, step 2: max / 448",
)

# Decode-sized dynamic per-tensor fp8 quantization: two launches of one row chunk per
# program (the operator routes x of at most C.DYNAMIC_QUANT_MAX_CHUNKS chunks here).
# ACTIVATION -1: x as it is; 0 silu, 2 gelu_tanh (activation.py): x is GEMM1's
# [gate | up] and the activation runs in both steps (fused_experts' decode GEMM2 input;
# fp16/bf16 only). Aligned rows only (16-byte loads; decode's inputs are): the
# operator sends unaligned x through the three-launch path. Both steps must cut x into
# the same chunks: BLOCK_K is the constant, not tuned.
_DQ_FUNCTIONAL = {"dtype": FLOAT_DTYPES, "ACTIVATION": [-1, 0, 2]}
_DQ_GRID = ("M * cdiv(K, BLOCK_K) + (M * cdiv(K, BLOCK_K) == 0)", "1", "1")  # one program for empty x


def _dq_valid(f, arch):
    return _fp8_ok(arch) and (f["ACTIVATION"] < 0 or f["dtype"] != "fp32")


fp8_dynamic_amax_chunks = Kernel(
    name="fp8_dynamic_amax_chunks",
    source="tritonsrc/moe/fused_helpers.py",
    function="fp8_dynamic_amax_chunks_kernel",
    pdl=True,
    args=[_QX16.ptr, Arg("partial_ptr", "*fp32"), Arg("topk_ids_ptr", "*i32"), Arg("expert_map_ptr", "*i32"),
          Arg("M", "i32"), Arg("K", "i32:16"), *_QX16.strides, Arg("num_experts", "i32"),
          Arg("expert_map_len", "i32")],
    functional=_DQ_FUNCTIONAL,
    valid=_dq_valid,
    tuning=TuningSpace(params={"BLOCK_K": [C.DYNAMIC_QUANT_CHUNK], "num_warps": [4, 8], **_ONE_STAGE},
                       default=lambda f, arch: {"BLOCK_K": C.DYNAMIC_QUANT_CHUNK, "num_warps": 4, "num_stages": 1}),
    grid=_DQ_GRID,
    doc="dynamic per-tensor fp8 quantization of decode-sized x, step 1: max |x| per row chunk",
)

fp8_dynamic_quant_chunks = Kernel(
    name="fp8_dynamic_quant_chunks",
    source="tritonsrc/moe/fused_helpers.py",
    function="fp8_dynamic_quant_chunks_kernel",
    pdl=True,
    args=[_QX16.ptr, _QQ16.ptr, Arg("scale_ptr", "*fp32"), Arg("partial_ptr", "*fp32"), Arg("M", "i32"),
          Arg("K", "i32:16"), *_QX16.strides, *_QQ16.strides],
    functional=_DQ_FUNCTIONAL,
    valid=_dq_valid,
    tuning=TuningSpace(params={"BLOCK_K": [C.DYNAMIC_QUANT_CHUNK], "BLOCK_P": [256, C.DYNAMIC_QUANT_MAX_CHUNKS], "num_warps": [4, 8],
                               **_ONE_STAGE},
                       # One load of every partial (a loop of them paid an L2 round trip per step in series).
                       default=lambda f, arch: {"BLOCK_K": C.DYNAMIC_QUANT_CHUNK,
                                                "BLOCK_P": C.DYNAMIC_QUANT_MAX_CHUNKS, "num_warps": 4,
                                                "num_stages": 1}),
    grid=_DQ_GRID,
    doc="dynamic per-tensor fp8 quantization of decode-sized x, step 2: the scale and q per row chunk",
)

_ZERO_BUF = _rows("buf_ptr", "stride_", stride="i32:16")

moe_zero_dropped_rows = Kernel(
    name="moe_zero_dropped_rows",
    source="tritonsrc/moe/fused_helpers.py",
    function="zero_dropped_rows_kernel",
    pdl=True,
    args=[_ZERO_BUF.ptr, Arg("topk_ids_ptr", "*i32"), Arg("expert_map_ptr", "*i32"),
          Arg("rows", "i32"), Arg("cols", "i32:16"), *_ZERO_BUF.strides, Arg("num_experts", "i32"),
          Arg("expert_map_len", "i32")],
    functional={"dtype": FLOAT_DTYPES, "HAS_EXPERT_MAP": [False, True]},
    unaligned_variant=True,
    tuning=TuningSpace(
        params={"BLOCK_R": [1, 2, 4, 8, 16], "BLOCK_C": [256, 512, 1024, 2048], "num_warps": [1, 2, 4, 8],
                **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_R": 4, "BLOCK_C": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_R"] * c["BLOCK_C"] <= 8192,
    ),
    grid=("cdiv(rows, BLOCK_R)", "1", "1"),
    doc="zero the rows of slots moe_align drops (expert map -1)",
)

# ----------------------------------------------------------------------------
# Grouped / sigmoid top-k routing (DeepSeek-V2/V3) and expert-parallel indices
# ----------------------------------------------------------------------------
_BIAS = Tensor("bias_ptr", "fp32", ("b",), rank=1, prefix="stride_")  # [E], any stride

grouped_topk = Kernel(
    name="grouped_topk",
    source="tritonsrc/moe/grouped_topk.py",
    function="grouped_topk_kernel",
    pdl=True,
    args=[
        _LOGITS.ptr, _BIAS.ptr, _TOPK_W.ptr,
        _TOPK_IDS.ptr,
        Arg("num_tokens", "i32"), Arg("num_experts", "i32"), Arg("topk", "i32"), Arg("num_groups", "i32"),
        Arg("topk_group", "i32"), Arg("scoring", "i32"), Arg("has_bias", "i32"), Arg("renormalize", "i32"),
        Arg("routed_scaling_factor", "fp32"),
        *_LOGITS.strides, *_BIAS.strides, *_TOPK_W.strides,
        *_TOPK_IDS.strides,
    ],
    # Scoring, bias, groups and renormalize are runtime arguments: one kernel per dtype and BLOCK_E.
    functional={"dtype": FLOAT_DTYPES, "BLOCK_E": TOPK_BLOCK_E},
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8, 16, 32, 64, 128], "num_warps": [1, 2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: C.topk_default(f["BLOCK_E"]),
        prune=_topk_prune,
    ),
    grid=("cdiv(num_tokens, BLOCK_M)", "1", "1"),
    autotune_keys=[AutotuneKey("num_tokens", bins=[64, 1024, 8192])],
    doc="grouped / sigmoid router top-k (DeepSeek-V2/V3)",
)

# ----------------------------------------------------------------------------
# Quantization modes beyond fp8 per-tensor / block (issue 13): weight-only int8
# and int4 grouped GEMM, per-token fp8 activation quant (fp8 per channel).
# Aligned shapes only, fp16/bf16 activations: see the kernels' docstrings.
# ----------------------------------------------------------------------------
def _wq_prune(f, c, arch):
    if (c["num_warps"] == 2 and (c["BLOCK_SIZE_N"] > 32 or f["BLOCK_SIZE_M"] > 32)) \
            or (c["BLOCK_SIZE_N"] == 16 and c["num_warps"] != 2):
        return False  # 2 warps: the narrow decode tiles only (16 columns need them)
    if c["INT4_DOT"] and f["b_dtype"] != "u8":
        return False  # the offset dot is int4's (int8 tiles convert exactly as they are)
    if f["b_dtype"] == "u8" and c["BLOCK_SIZE_K"] % 64 != 0:
        return False  # int4 tiles are read as 64-wide sub-blocks, one group each
    if (c["GROUP_SIZE_M"] == 1) != (f["BLOCK_SIZE_M"] <= 32):
        return False
    smem = c["num_stages"] * c["BLOCK_SIZE_K"] * (2 * f["BLOCK_SIZE_M"] + c["BLOCK_SIZE_N"])
    return smem <= (227 if arch >= 90 else 163) * 1024


_WQ_A = _rows("a_ptr", "stride_a", "m", stride="i32")
_WQ_B = _rows("b_ptr", "stride_b", "en", dtype="{b_dtype}", stride="i32")
_WQ_C = _rows("c_ptr", "stride_c", "m", stride="i32")
_WQ_ZP = Tensor("b_zp_ptr", "u8", "enk", rank=3, prefix="stride_bz")  # zero points, [E, N, K / group] packed

fused_moe_gemm_wq = Kernel(
    name="fused_moe_gemm_wq",
    source="tritonsrc/moe/grouped_gemm_wq.py",
    function="fused_moe_wq_kernel",
    pdl=True,
    args=[
        _WQ_A.ptr, _WQ_B.ptr, _WQ_C.ptr,
        _GEMM_B_SCALE.ptr, _WQ_ZP.ptr, Arg("topk_weights_ptr", "*fp32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"),
        Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32"), Arg("K", "i32"), Arg("EM", "i32"), Arg("num_valid_tokens", "i32"), Arg("top_k", "i32"),
        *_WQ_A.strides, *_WQ_B.strides, *_WQ_C.strides,
        *_GEMM_B_SCALE.strides,
        *_WQ_ZP.strides,
        Arg("group_size", "i32"), Arg("has_zp", "i32"), Arg("num_experts", "i32"),
    ],
    functional={
        "dtype": ["fp16", "bf16"],
        "b_dtype": ["i8", "u8"],  # int8 w8a16, packed int4 w4a16
        "MUL_ROUTED_WEIGHT": [False, True],
        "BLOCK_SIZE_M": list(C.WQ_BLOCK_SIZES_M),
        # Split-K (grouped_gemm_wq.py: partial rows slot * SPLIT_K + s, reduced by
        # moe_sum): the operator picks WQ_SPLIT_K for decode GEMMs whose tiles leave
        # SMs idle (v2src/ops/moe_fused.cc), on the decode tile height only.
        "SPLIT_K": [1, C.WQ_SPLIT_K],
    },
    # Split: the decode GEMM2 (16-row blocks, the routed weight) only, as fused_experts runs it.
    valid=lambda f, arch: f["SPLIT_K"] == 1 or (f["BLOCK_SIZE_M"] == 16 and f["MUL_ROUTED_WEIGHT"]),
    tuning=TuningSpace(
        # INT4_DOT (int4 only): 0 dequantizes each nibble to q - zp; 1 feeds the
        # tensor cores OFFSET + q made from 32-bit words and takes the zero
        # point out of the K sum; 2-4 dot the even and odd nibbles as loaded,
        # in the mma operand registers: 3 and 4 by PRMT (inline PTX), 3 with
        # row sums, 2 and 4 subtract the zero point in 16 bits (grouped_gemm_wq.py).
        # Narrow tiles of 2 warps (16-32 columns) give decode GEMMs with few
        # experts and N of a few thousand (Mixtral's GEMM2 at M=1: 2 x 4096)
        # more CTAs in flight.
        params={"BLOCK_SIZE_N": [16, 32, 64, 128, 256], "BLOCK_SIZE_K": [64, 128, 256],
                "GROUP_SIZE_M": [1, 8, 16], "num_warps": [2, 4, 8], "num_stages": [2, 3, 4, 5],
                "INT4_DOT": [0, 1, 2, 3, 4]},
        default=lambda f, arch: C.wq_gemm_default(f["BLOCK_SIZE_M"], 8 if f["b_dtype"] == "i8" else 4, arch,
                                                  f["SPLIT_K"]),
        prune=_wq_prune,
    ),
    grid=("cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N)", "SPLIT_K", "1"),
    grid_args=["tokens_per_expert"],
    autotune_keys=[AutotuneKey("tokens_per_expert", bins=list(C.TOKENS_PER_EXPERT_BINS)),
                   AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))],
    doc="grouped GEMM over experts, int8 / int4 weights, fp16/bf16 activations",
)

per_token_quant_fp8 = Kernel(
    name="per_token_quant_fp8",
    source="tritonsrc/moe/quant.py",
    function="per_token_quant_fp8_kernel",
    pdl=True,
    args=[
        _QX16.ptr, _QQ16.ptr, Arg("s_ptr", "*fp32"),
        Arg("M", "i32"), Arg("K", "i32:16"), *_QX16.strides, *_QQ16.strides,
    ],
    functional={"dtype": ["fp16", "bf16"]},
    valid=lambda f, arch: _fp8_ok(arch),
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8], "BLOCK_K": [256, 512, 1024], "num_warps": [1, 2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_M": 2, "BLOCK_K": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK_M"] * c["BLOCK_K"] <= 4096,
    ),
    grid=("cdiv(M, BLOCK_M)", "1", "1"),
    autotune_keys=[AutotuneKey("M", bins=[64, 1024, 16384])],
    doc="dynamic per-token fp8 e4m3 quantization (one scale per row)",
)

MOE_KERNELS = [act_and_mul, moe_sum, topk_softmax, moe_align_count, moe_align_scan, moe_align_offsets,
               moe_align_scatter, moe_align_small, fused_moe_gemm, per_token_group_quant_fp8,
               per_tensor_quant_fp8, fp8_amax_partial, fp8_scale_from_amax, fp8_dynamic_amax_chunks,
               fp8_dynamic_quant_chunks, moe_zero_dropped_rows]
ep_dispatch_indices = Kernel(
    name="ep_dispatch_indices",
    source="tritonsrc/moe/ep_dispatch.py",
    function="ep_dispatch_indices_kernel",
    args=[Arg(n, "*i32") for n in ("topk_ids_ptr", "expert_map_ptr", "sorted_slots_ptr", "position_experts_ptr",
                                   "total_ptr", "sorted_token_ids_ptr", "inverse_ptr", "expert_offsets_ptr")]
    + [Arg("numel", "i32"), Arg("topk", "i32"), Arg("num_local_experts", "i32"), Arg("expert_map_len", "i32")],
    functional={"HAS_EXPERT_MAP": [False, True]},
    tuning=TuningSpace(params={"BLOCK_T": [128, 256, 512, 1024], "num_warps": [2, 4, 8], **_ONE_STAGE},
                       default=lambda f, arch: {"BLOCK_T": 256, "num_warps": 4, "num_stages": 1}),
    grid=("cdiv(numel, BLOCK_T) + (numel == 0)", "1", "1"),  # program 0 always writes expert_offsets
    doc="expert-parallel dispatch/combine indices from moe_align at block size 1",
)

MOE_KERNELS += [grouped_topk, ep_dispatch_indices]
MOE_KERNELS += [fused_moe_gemm_wq, per_token_quant_fp8]

# GEMM2's input with 128x128 block scales: act_and_mul + per_token_group_quant_fp8
# in one kernel (tritonsrc/moe/act_quant.py; the same bits, no 16-bit intermediate).
_AQ_Q = _rows("q_ptr", "stride_q_", dtype="fp8e4nv", stride="i32:16")
_AQ_S = Tensor("s_ptr", "fp32", ("row", "group"), rank=2, prefix="stride_s_")
_AQ_IN = _rows("in_ptr", "stride_in_", stride="i32:16")
act_and_mul_group_quant_fp8 = Kernel(
    name="act_and_mul_group_quant_fp8",
    source="tritonsrc/moe/act_quant.py",
    function="act_and_mul_group_quant_fp8_kernel",
    pdl=True,
    args=[_AQ_Q.ptr, _AQ_S.ptr, _AQ_IN.ptr, Arg("n_rows", "i32"), Arg("n_cols", "i32:16"), *_AQ_Q.strides,
          *_AQ_S.strides, *_AQ_IN.strides],
    functional={"dtype": ["fp16", "bf16"], "ACTIVATION": [0, 1, 2, 3], "GROUP": [128]},  # fp32: two kernels
    valid=lambda f, arch: _fp8_ok(arch),
    tuning=TuningSpace(
        params={"BLOCK_M": [1, 2, 4, 8, 16], "num_warps": [1, 2, 4, 8], **_ONE_STAGE},
        default=lambda f, arch: {"BLOCK_M": 4, "num_warps": 4, "num_stages": 1},
    ),
    grid=("cdiv(n_rows, BLOCK_M)", "cdiv(n_cols, GROUP)", "1"),
    doc="act(gate) * up quantized to fp8 with one scale per row and 128 columns",
)
MOE_KERNELS += [act_and_mul_group_quant_fp8]

# ci (sm_80 + sm_90 on 2 cores): fp16; the expert buckets of E = 8, 64, 256;
# GEMM fp16 + fp8 block, aligned, the BLOCK_SIZE_M values the operator picks (16, 64, 128).
_CI_TOPK_E = (8, 64, 256)
_CI_ALIGN_E = (16, 64, 256)


def _ci_aligned(f):
    return f.get("ALIGNED", True) and f.get("ALIGNED16", True)


def _ci_quant_gemm(f):
    """One functional of the per-channel fp8 mode (decode tile, GEMM2 form)."""
    return (f["QUANT"] == C.QUANT_FP8_CHANNEL and f["c_dtype"] == "fp16" and f["BLOCK_SIZE_M"] == 16
            and f["MUL_ROUTED_WEIGHT"] and _ci_aligned(f))


def _ci_tensor_decode_gemm(f):
    """fp8 per tensor at decode tile height, unsplit (the stand-in driver walks that route)."""
    return (f["QUANT"] == C.QUANT_FP8_TENSOR and f["c_dtype"] == "fp16" and f["BLOCK_SIZE_M"] == 16
            and f["SPLIT_K"] == 1 and _ci_aligned(f))


MOE_CI = {
    "topk_softmax": lambda f: f["dtype"] == "fp16" and f["BLOCK_E"] in _CI_TOPK_E,
    "moe_align_count": lambda f: f["BLOCK_E"] in _CI_ALIGN_E,
    "moe_align_offsets": lambda f: f["BLOCK_E"] in _CI_ALIGN_E,
    "moe_align_scatter": lambda f: f["BLOCK_E"] in _CI_ALIGN_E,
    "moe_align_small": lambda f: f["BLOCK_E"] in _CI_ALIGN_E,
    "fused_moe_gemm": lambda f: f["c_dtype"] == "fp16" and f["QUANT"] in (C.QUANT_NONE, C.QUANT_FP8_BLOCK)
    and _ci_aligned(f) and f["BLOCK_SIZE_M"] in (16, 64, 128)
    or _ci_quant_gemm(f) or _ci_tensor_decode_gemm(f),
    "per_token_group_quant_fp8": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "per_tensor_quant_fp8": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "fp8_amax_partial": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "fp8_dynamic_amax_chunks": lambda f: f["dtype"] == "fp16" and f["ACTIVATION"] <= 0,
    "fp8_dynamic_quant_chunks": lambda f: f["dtype"] == "fp16" and f["ACTIVATION"] <= 0,
    "moe_zero_dropped_rows": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "grouped_topk": lambda f: f["dtype"] == "fp16" and f["BLOCK_E"] in _CI_TOPK_E,
    # One functional per weight-only mode, one per-token quant.
    "fused_moe_gemm_wq": lambda f: f["dtype"] == "fp16" and f["BLOCK_SIZE_M"] == 16 and f["MUL_ROUTED_WEIGHT"],
    "per_token_quant_fp8": lambda f: f["dtype"] == "fp16",
    "act_and_mul_group_quant_fp8": lambda f: f["dtype"] == "fp16" and f["ACTIVATION"] == 0,
}

# ----------------------------------------------------------------------------
# fused_experts backward (training): grouped GEMM input / weight gradients and
# the act_and_mul backward with the routing weights' gradient. fp16/bf16; the
# operator aligns with one block size (BWD_BLOCK_SIZE_M) of its own.
# ----------------------------------------------------------------------------
BWD_DTYPES = ["fp16", "bf16"]
BWD_BLOCK_SIZE_M = 64  # = python/jit/moe_bwd.BWD_BLOCK_SIZE_M and v2src/ops/moe_fused_bwd.cc


def _bwd_gemm_prune(f, c, arch):
    if not f["ALIGNED"] and (c["BLOCK_SIZE_K"] > 64 or c["BLOCK_SIZE_N"] > 64 or c["num_stages"] > 2):
        return False
    smem = c["num_stages"] * 2 * c["BLOCK_SIZE_K"] * (BWD_BLOCK_SIZE_M + c["BLOCK_SIZE_N"])
    return smem <= (227 if arch >= 90 else 163) * 1024


def _bwd_gemm_default(f, arch):
    if not f["ALIGNED"]:
        return {"BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 3}


_DGRAD_A, _DGRAD_C = _rows("a_ptr", "stride_a", "m", stride="i32"), _rows("c_ptr", "stride_c", "m", stride="i32")
_DGRAD_B = _rows("b_ptr", "stride_b", "ek", stride="i32")  # [E, K, N]

moe_dgrad = Kernel(
    name="moe_dgrad",
    source="tritonsrc/moe/grouped_gemm_bwd.py",
    function="moe_dgrad_kernel",
    args=[
        _DGRAD_A.ptr, _DGRAD_B.ptr, _DGRAD_C.ptr,
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"), Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32"), Arg("K", "i32"), Arg("EM", "i32"), Arg("num_valid_tokens", "i32"), Arg("top_k", "i32"),
        *_DGRAD_A.strides, *_DGRAD_B.strides, *_DGRAD_C.strides,
        Arg("num_experts", "i32"),
    ],
    functional={"dtype": BWD_DTYPES, "ALIGNED": [False, True], "BLOCK_SIZE_M": [BWD_BLOCK_SIZE_M]},
    unaligned_variant=True,
    valid=lambda f, arch: _aligned_ok(f),
    tuning=TuningSpace(
        params={"BLOCK_SIZE_N": [64, 128, 256], "BLOCK_SIZE_K": [32, 64, 128], "GROUP_SIZE_M": [1, 8],
                "num_warps": [4, 8], "num_stages": [2, 3, 4]},
        default=_bwd_gemm_default,
        prune=_bwd_gemm_prune,
    ),
    grid=("cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N)", "1", "1"),
    autotune_keys=[AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))],
    doc="fused_experts backward: grouped GEMM input gradient (C[slot] = A[slot / top_k] @ B[e], B [E, K, N])",
)

_WGRAD_DY, _WGRAD_X = _rows("dy_ptr", "stride_dy", "m", stride="i32"), _rows("x_ptr", "stride_x", "m", stride="i32")
_WGRAD_DW = _rows("dw_ptr", "stride_dw", "en", stride="i32")  # [E, N, K]

moe_wgrad = Kernel(
    name="moe_wgrad",
    source="tritonsrc/moe/grouped_gemm_bwd.py",
    function="moe_wgrad_kernel",
    args=[
        _WGRAD_DY.ptr, _WGRAD_X.ptr, _WGRAD_DW.ptr,
        Arg("topk_weights_ptr", "*fp32"),
        Arg("sorted_token_ids_ptr", "*i32"), Arg("expert_ids_ptr", "*i32"), Arg("num_tokens_post_padded_ptr", "*i32"),
        Arg("N", "i32"), Arg("K", "i32"), Arg("num_valid_tokens", "i32"), Arg("top_k_dy", "i32"), Arg("top_k_x", "i32"),
        *_WGRAD_DY.strides, *_WGRAD_X.strides, *_WGRAD_DW.strides,
        Arg("num_experts", "i32"),
    ],
    functional={"dtype": BWD_DTYPES, "MUL_ROUTED_WEIGHT": [False, True], "ALIGNED": [False, True],
                "BLOCK_SIZE_M": [BWD_BLOCK_SIZE_M], "SCAN_BLOCK": [1024]},
    unaligned_variant=True,
    valid=lambda f, arch: _aligned_ok(f),
    tuning=TuningSpace(
        params={"BLOCK_SIZE_N": [64, 128], "BLOCK_SIZE_K": [64, 128], "num_warps": [4, 8], "num_stages": [2, 3, 4]},
        default=lambda f, arch: {"BLOCK_SIZE_N": 64 if not f["ALIGNED"] else 128, "BLOCK_SIZE_K": 64,
                                 "num_warps": 4 if not f["ALIGNED"] else 8, "num_stages": 2 if not f["ALIGNED"] else 3},
        prune=_bwd_gemm_prune,
    ),
    grid=("num_experts * cdiv(N, BLOCK_SIZE_N) * cdiv(K, BLOCK_SIZE_K)", "1", "1"),
    autotune_keys=[AutotuneKey("N", bins=list(C.GEMM_NK_BINS)), AutotuneKey("K", bins=list(C.GEMM_NK_BINS))],
    doc="fused_experts backward: per-expert weight gradient, deterministic (no atomics)",
)

_ACTB_H, _ACTB_G, _ACTB_DH, _ACTB_A = (_rows(n + "_ptr", f"stride_{n}_") for n in ("h", "g", "dh", "a"))

act_and_mul_bwd = Kernel(
    name="act_and_mul_bwd",
    source="tritonsrc/moe/activation_bwd.py",
    function="act_and_mul_bwd_kernel",
    args=[
        _ACTB_H.ptr, _ACTB_G.ptr, Arg("w_ptr", "*fp32"), _ACTB_DH.ptr,
        _ACTB_A.ptr, Arg("dw_ptr", "*fp32"), Arg("n_rows", "i32"), Arg("n_cols", "i32"),
        *_ACTB_H.strides, *_ACTB_G.strides, *_ACTB_DH.strides,
        *_ACTB_A.strides,
    ],
    functional={"dtype": BWD_DTYPES, "ACTIVATION": [0, 1, 2]},
    tuning=TuningSpace(
        params={"BLOCK": [256, 512, 1024, 2048], "num_warps": [2, 4, 8], "num_stages": [1]},
        default=lambda f, arch: {"BLOCK": 1024, "num_warps": 4, "num_stages": 1},
        prune=lambda f, c, arch: c["BLOCK"] // (32 * c["num_warps"]) <= 16,
    ),
    grid=("n_rows", "1", "1"),
    autotune_keys=[AutotuneKey("n_cols", bins=[1024, 4096, 16384])],
    doc="fused_experts backward: act_and_mul gradient and the routing weights' gradient",
)

MOE_KERNELS += [moe_dgrad, moe_wgrad, act_and_mul_bwd]
MOE_CI.update({
    "moe_dgrad": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "moe_wgrad": lambda f: f["dtype"] == "fp16" and _ci_aligned(f),
    "act_and_mul_bwd": lambda f: f["dtype"] == "fp16",
})
