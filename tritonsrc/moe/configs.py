"""Default tuning configs of the MoE kernels, shared by the AOT rules
(python/rules_moe.py) and the JIT launchers (python/jit/moe.py). Plain Python: no
torch, no triton, so the build generator can import it.

Grouped GEMM: BLOCK_SIZE_M must equal the block size that moe_align used for
the same call, so the AOT rule makes it FUNCTIONAL: the operator picks it
from the token count M (`block_size_m`, the BLOCK_SIZE_M column of
DEFAULT_CONFIGS) before aligning, and the rule's default tuning for that
functional is the DEFAULT_CONFIGS row with that BLOCK_SIZE_M (`gemm_default`).
"""

QUANT_NONE, QUANT_FP8_TENSOR, QUANT_FP8_BLOCK = 0, 1, 2
QUANT_FP8_CHANNEL = 3  # fp8 w8a8, per-token A scales, per-output-channel B scales
# Weight-only modes (the C++ QuantMode numbering; kernel grouped_gemm_wq.py).
QUANT_INT8_W8A16, QUANT_INT4_W4A16 = 4, 5
M_BINS = (16, 64, 512)  # DEFAULT_CONFIGS rows: M <= 16, <= 64, <= 512, larger
BLOCK_SIZES_M = (16, 32, 64, 128)  # the GEMM's functional BLOCK_SIZE_M values
# Tuning-database keys of the grouped GEMM (upper bounds; above the last: last bin).
TOKENS_PER_EXPERT_BINS = (1, 4, 16, 64, 256, 1024, 4096)  # cdiv(M * top_k, E)
GEMM_NK_BINS = (1024, 2048, 4096, 8192, 16384)  # the GEMM's N (output width) and K


def _cfg(bm, bn, bk, g, w, st):
    return dict(BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk, GROUP_SIZE_M=g,
                num_warps=w, num_stages=st)


# sm_90 defaults per M bin (M <= 16, <= 64, <= 512, larger); compile-checked:
# no spills, shared memory <= 192 KB (sm_90 has 227 KB). Keys: quant mode; "unaligned" is the
# ALIGNED=False fallback (scalar loads, small tiles keep it spill-free).
# The M <= 64 row groups 16 M blocks: where routing gives an expert several blocks (random
# routing, Mixtral-like M=64: 10-12 blocks for 8 experts) they run next to each other and
# share each weight tile through L2; group 1 reads it from DRAM once per block (H200:
# 0.75 -> 0.90 of the roofline, bench/results/moe_decode_group_sm90.txt). Where each expert
# has one block (M <= 16) group 1 keeps consecutive programs on one expert's rows (up to 7%
# faster there). The AOT default of BLOCK_SIZE_M 16 is the M <= 16 row (gemm_default); the
# tuner picks the group per tokens-per-expert bin (tune_moe.quick_space).
DEFAULT_CONFIGS = {
    QUANT_NONE: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 16, 4, 4),
                 _cfg(64, 128, 64, 8, 4, 4), _cfg(128, 128, 64, 16, 8, 4)],
    QUANT_FP8_TENSOR: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 16, 4, 4),
                       _cfg(64, 128, 128, 8, 4, 3), _cfg(128, 128, 128, 16, 8, 3)],
    QUANT_FP8_BLOCK: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 16, 4, 4),
                      _cfg(64, 128, 128, 8, 4, 3), _cfg(128, 128, 128, 16, 8, 3)],
    QUANT_FP8_CHANNEL: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 16, 4, 4),
                        _cfg(64, 128, 128, 8, 4, 3), _cfg(128, 128, 128, 16, 8, 3)],
    "unaligned": [_cfg(16, 64, 64, 1, 4, 2), _cfg(16, 64, 64, 1, 4, 2),
                  _cfg(64, 64, 64, 8, 8, 2), _cfg(64, 64, 64, 8, 8, 2)],
}
# Candidates for a GPU sweep (sm_90, ALIGNED). (16, 64, 256) is not valid for
# QUANT_FP8_BLOCK (BLOCK_SIZE_K <= 128); (128, 256, 64) spills on sm_80.
SWEEP_CANDIDATES = [
    _cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 1, 4, 4), _cfg(16, 64, 256, 1, 4, 3),
    _cfg(32, 64, 128, 1, 4, 4), _cfg(64, 64, 64, 8, 4, 3), _cfg(64, 128, 64, 8, 4, 4),
    _cfg(64, 128, 128, 8, 4, 3), _cfg(64, 256, 64, 8, 8, 3), _cfg(128, 128, 64, 16, 8, 4),
    _cfg(128, 128, 128, 16, 8, 3),
]
# Defaults for the BLOCK_SIZE_M values no DEFAULT_CONFIGS row uses (reachable
# through an explicit block size, or a future tuning database). 32 aligned is
# a sweep candidate; all compile-checked spill-free for sm_80 and sm_90.
_EXTRA = {
    ("aligned", 32): _cfg(32, 64, 128, 1, 4, 4),
    ("unaligned", 32): _cfg(32, 64, 64, 1, 4, 2),
    ("unaligned", 128): _cfg(128, 32, 64, 16, 8, 2),
}


# Weight-only GEMM (grouped_gemm_wq.py), keyed by WEIGHT_BITS, per M bin as
# above. It is built with BLOCK_SIZE_M 16 and 64 only (WQ_BLOCK_SIZES_M):
# dequantization, not the tile height, bounds it at large M, and it halves
# the cubins. 4-bit decode tiles read 128 of K (64 contiguous bytes per weight
# row; 64-wide sub-blocks keep one group each).
WQ_BLOCK_SIZES_M = (16, 64)
WQ_DEFAULT_CONFIGS = {
    8: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 1, 4, 4),
        _cfg(64, 128, 64, 8, 4, 4), _cfg(64, 128, 64, 8, 4, 4)],
    4: [_cfg(16, 64, 128, 1, 4, 4), _cfg(16, 128, 128, 1, 4, 4),
        _cfg(64, 128, 64, 8, 4, 3), _cfg(64, 128, 64, 8, 4, 3)],
}
WQ_GROUP_MULTIPLE = 64  # 4-bit group sizes must be multiples of this (the kernel's K sub-block)


def wq_default_config(M, bits):
    return dict(WQ_DEFAULT_CONFIGS[bits][_row(M)])


# Split-K of the weight-only decode GEMM (functional SPLIT_K of fused_moe_gemm_wq).
# Mixtral-like int4 GEMM2 at M=1 (2 x 64 tiles of 64 columns, K 14336, 132 SMs):
# 79 us unsplit, 68 / 37 / 40 us with 2 / 4 / 8 splits (H200,
# bench/experiments/int4_splitk.py, bench/results/int4_splitk_sm90.json).
WQ_SPLIT_K = 4
GEMM_SPLIT_K = WQ_SPLIT_K  # the same split of fused_moe_gemm's decode GEMM2 (bf16/fp16/fp8)
# When fused_experts splits a quantized decode GEMM2 (v2src/ops/moe_fused.cc split_k_for):
# its output tiles (experts touched x cdiv(K, SPLIT_K_TILE_N)) leave SMs of an sm_90 part
# (SPLIT_K_SMS) idle and each split keeps at least SPLIT_K_MIN_K of the reduced dim. A fixed
# SM count: the workspace size the operator reports may not depend on the device.
SPLIT_K_SMS = 132
SPLIT_K_TILE_N = 64
SPLIT_K_MIN_K = 1024
# Its default tile: that measurement's config (the int4 database's M=1 GEMM2 entry;
# INT4_DOT 4 is device-checked by the int4 tuner in every bin); int8 as unsplit.
WQ_SPLIT_DEFAULT = {4: dict(BLOCK_SIZE_N=64, BLOCK_SIZE_K=256, GROUP_SIZE_M=1, num_warps=4, num_stages=3, INT4_DOT=4)}


def wq_gemm_default(block_m, bits, arch, split_k=1):
    """AOT default tuning of the weight-only GEMM functional (no BLOCK_SIZE_M)."""
    if split_k > 1 and bits in WQ_SPLIT_DEFAULT:
        return dict(WQ_SPLIT_DEFAULT[bits])
    cfg = dict(next(c for c in WQ_DEFAULT_CONFIGS[bits] if c["BLOCK_SIZE_M"] == block_m))
    del cfg["BLOCK_SIZE_M"]
    cfg["INT4_DOT"] = 0  # the offset dot (1) is chosen by the tuner, which checks it on the device
    return cfg


def _row(M):
    for i, bound in enumerate(M_BINS):
        if M <= bound:
            return i
    return len(M_BINS)


def default_config(M, quant=QUANT_NONE, aligned=True):
    """The JIT launcher's config for M tokens (one DEFAULT_CONFIGS row)."""
    return dict(DEFAULT_CONFIGS[quant if aligned else "unaligned"][_row(M)])


# An expert with at least this many slots on average (cdiv(M * top_k, E)) gets
# 128-row blocks even where M alone picks 64: one block per 128 slots reads
# each weight tile once instead of twice (Mixtral-like layers at M = 512 move
# 1.9 GB of weights per GEMM, near the HBM floor; bench/experiments/moe_gemm_tma.py).
TALL_BLOCK_SIZE_M = 128
TALL_BLOCK_MIN_TOKENS_PER_EXPERT = 128


def block_size_m(M, aligned=True, topk=None, num_experts=None):
    """BLOCK_SIZE_M (= the align block size) the AOT operator uses for M
    tokens. The same for every quant mode (the DEFAULT_CONFIGS column agrees).
    With topk and num_experts, aligned shapes whose experts average at least
    TALL_BLOCK_MIN_TOKENS_PER_EXPERT slots get TALL_BLOCK_SIZE_M."""
    bm = DEFAULT_CONFIGS[QUANT_NONE if aligned else "unaligned"][_row(M)]["BLOCK_SIZE_M"]
    if aligned and topk and num_experts and bm < TALL_BLOCK_SIZE_M \
            and -(-M * topk // num_experts) >= TALL_BLOCK_MIN_TOKENS_PER_EXPERT:
        return TALL_BLOCK_SIZE_M
    return bm


def gemm_default(block_m, quant, aligned, arch):
    """Default tuning of the AOT GEMM functional (BLOCK_SIZE_M, QUANT, ALIGNED):
    the first DEFAULT_CONFIGS row with that BLOCK_SIZE_M (for 16: the M <= 16
    row), without BLOCK_SIZE_M. sm_80 runs fp16/bf16 only, with these rows.
    """
    table = DEFAULT_CONFIGS[quant if aligned else "unaligned"]
    cfg = next((c for c in table if c["BLOCK_SIZE_M"] == block_m), None)
    if cfg is None:
        cfg = _EXTRA[("aligned" if aligned else "unaligned", block_m)]
    cfg = dict(cfg)
    del cfg["BLOCK_SIZE_M"]
    return cfg


def gemm_config(M, quant=QUANT_NONE, aligned=True, arch=90):
    """Full config (with BLOCK_SIZE_M) that the AOT fused_experts runs for M
    tokens with no tuning database: for JIT comparisons."""
    bm = block_size_m(M, aligned)
    return dict(BLOCK_SIZE_M=bm, **gemm_default(bm, quant, aligned, arch))


# ---------------------------------------------------------------- small kernels
def topk_default(block_e):
    """topk_softmax: about 1K logits per program (BLOCK_M * BLOCK_E)."""
    return {"BLOCK_M": max(1, 1024 // block_e), "num_warps": 4, "num_stages": 1}


ALIGN_BLOCK_T = 256  # count/scatter chunk (functional: both launches must agree)
ALIGN_SMALL_MAX = 1024  # largest numel the one-launch kernel takes
# Dynamic per-tensor fp8 quantization of decode-sized x in two launches of one row
# chunk (DYNAMIC_QUANT_CHUNK columns) per program (fused_helpers.fp8_dynamic_amax_chunks
# + fp8_dynamic_quant_chunks) when x has at most DYNAMIC_QUANT_MAX_CHUNKS chunks; larger
# x takes three launches. Decode's GEMM inputs: Mixtral-like M=1 GEMM2 is 2 x 14336
# (28 chunks), M=64 128 x 14336 (1792), DeepSeek-like M=64 GEMM2 512 x 2048 (1024). The
# partials buffer holds DYNAMIC_QUANT_MAX_CHUNKS floats; every step-2 program reads all of
# them (one BLOCK_P load: 2048 programs x 8 KB from L2, ~2 us, against the three launches
# plus the activation's own that Mixtral M=64 took at 1024).
DYNAMIC_QUANT_CHUNK = 1024
DYNAMIC_QUANT_MAX_CHUNKS = 2048
ALIGN_SMALL_BLOCK_T = (64, 256, 1024)


def align_block_b(block_e):
    """expert_ids tile: the [BLOCK_B, BLOCK_E] search tile stays <= 4K elements."""
    return max(8, min(128, 4096 // block_e))


def align_small_block_t(numel):
    return next(bt for bt in ALIGN_SMALL_BLOCK_T if numel <= bt)


def align_small_warps(block_t):
    return 8 if block_t >= 1024 else 4
