"""Flash attention kernel rules (see kernel_rules.py for the vocabulary)."""
import dataclasses

from python.kernel_rules import Arg, AutotuneKey, Kernel, Tensor, TuningSpace, declare_profile_subsets
from tritonsrc.flash import bwd_configs
from tritonsrc.flash.fwd_configs import DROPOUT_MASK_CONFIG, TUNING_CANDIDATES, pick_config

HEAD_DIM_BUCKETS = [16, 32, 64, 128, 256]  # NPOT head dims run padded in the next bucket
SEQLEN_BINS = [128, 512, 1024, 2048, 4096, 8192]


def _fwd_shared_bytes(f, c):
    """Q tile + pipelined K and V tiles, in bytes (what Triton allocates, roughly)."""
    elem = 4 if f["dtype"] == "fp32" else 2
    d = f["BLOCK_DMODEL"]
    return elem * d * (c["BLOCK_M"] + 2 * c["BLOCK_N"] * max(1, c["num_stages"] - 1))


def _features_valid(f):
    """Window / softcap / ALiBi: one runtime-bounded band kernel (causal is
    the band with window_right 0, so CAUSAL_TYPE stays 0), fp16/bf16 only, no
    dropout; SCORE_MOD runs in the band kernel. Keeps the release build's
    extra cubins to a quarter (see docs/design.md)."""
    if not f["LOCAL_WINDOW"]:
        return f["SCORE_MOD"] == 0
    return f["CAUSAL_TYPE"] == 0 and f["dtype"] != "fp32" and not f["ENABLE_DROPOUT"]


def head_tensor(name, dims, prefix=None):
    """q/k/v/o and their gradients: 16-byte aligned, head dim contiguous, strides
    in elements (multiples of 8 for the aligned kernels)."""
    return Tensor(name, "{dtype}", dims, rank=4, align=16, stride="i32:8", prefix=prefix)


# Per-row fp32 statistics (log-sum-exp, delta): [B, Hq, Sq], rows contiguous.
LSE = Tensor("LSE", "fp32", "zh", rank=3, prefix="stride_lse_")
DELTA = Tensor("Delta", "fp32", "zh", rank=3, prefix="stride_delta_")
# ALiBi slopes: [B, Hq] or [Hq] (stride 0), heads contiguous.
ALIBI = Tensor("alibi_slopes", "fp32", "z", rank=2, prefix="stride_alibi_")

# Kernel arguments of the attention features (attn_mods.py); unused when off.
FEATURE_ARGS = [
    *ALIBI.args, Arg("softcap", "fp32"),
    Arg("window_left", "i32"), Arg("window_right", "i32"), Arg("window_align", "i32"),
]
FEATURE_FUNCTIONALS = {"LOCAL_WINDOW": [False, True], "SCORE_MOD": [0, 1, 2]}

# V head dim different from the Q/K one (issue 12): BLOCK_DV is V's (and O's,
# dO's, dV's) head dim, exact (no padding); 0 means V shares Q/K's head dim,
# which compiles exactly the kernels without the functional. The other values
# are compiled as kernels of their own (_vdim_kernel), valid only for the
# pairs models use, fp16/bf16, aligned data, no dropout or features: Q/K
# bucket 256 with V 128 (DeepSeek MLA: 192/128) and Q/K 128 with V 64.
VDIM_PAIRS = {(256, True): 128, (256, False): 128, (128, False): 64}  # (Q/K bucket, padded) -> V
VDIM_FUNCTIONALS = {"BLOCK_DV": [0]}


def _shared_limit(arch):
    return 227 * 1024 if arch >= 90 else 163 * 1024


def _flash_fallbacks(f):
    """What serves a head-dim functional that is not in the build: the padded
    kernel of its bucket, then those of the larger buckets (a padded kernel
    masks the head dim, so any head_dim <= its bucket is exact); aligned calls
    try the aligned kernels first, every call can take the unaligned ones."""
    out = []
    for aligned in ([True, False] if f["ALIGNED16"] else [False]):
        for d in HEAD_DIM_BUCKETS:
            if d >= f["BLOCK_DMODEL"]:
                g = dict(f, BLOCK_DMODEL=d, PADDED_HEAD=True, ALIGNED16=aligned)
                if g != f:
                    out.append(g)
    return out


# What release compiles of each flash kernel; the rest is "rare" and runs a
# fallback (_flash_fallbacks), see docs/build-time.md:
#   fp16/bf16  buckets 64, 128, 256: exact and padded heads (head dims up to
#              32 run the padded 64 kernel); unaligned data (head dims not a
#              multiple of 8, odd strides): the 256 bucket's unaligned kernel.
#   fp32       (a reference dtype) the padded unaligned kernels of buckets 64
#              and 256 only.
RELEASE_HALF_BUCKETS = {64: (False, True), 128: (False, True), 256: (False, True)}
RELEASE_HALF_UNALIGNED_BUCKETS = (256,)
RELEASE_FP32_BUCKETS = (64, 256)


def _flash_rare(f):
    d, padded, aligned = f["BLOCK_DMODEL"], f["PADDED_HEAD"], f["ALIGNED16"]
    if f["dtype"] == "fp32":
        return not (d in RELEASE_FP32_BUCKETS and padded and not aligned)
    if not aligned:
        return d not in RELEASE_HALF_UNALIGNED_BUCKETS
    return padded not in RELEASE_HALF_BUCKETS.get(d, ())


# ci: fp16, head-dim bucket 64 (exact and padded), every causal kind, batched
# and varlen, dropout on/off.
def _ci(f):
    return f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 64 and f["ALIGNED16"]


def _gputest(f):
    """The functionals test/gpu exercises: every head-dim bucket, causal kind and
    layout in fp16/bf16; dropout and the mask path at fp16 D=64; fp32 at D<=64;
    the unaligned fallback at the 128 bucket (head dim 111)."""
    if not f["ALIGNED16"] and f["BLOCK_DMODEL"] != 128:
        return False
    if f.get("ENABLE_DROPOUT"):
        return f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 64
    if f["dtype"] == "fp32":
        return f["BLOCK_DMODEL"] in (32, 64)
    return True


# Profile membership of the head-dim kernels (attn_fwd, bwd_*).
_FLASH_PROFILES = {"ci": _ci, "gputest": _gputest}


def _fwd_valid(f, arch):
    if not _features_valid(f):
        return False
    # Unpadded head dims (multiples of 16) give 8-divisible strides for any
    # dense layout; the unaligned fallback (head dims that are not multiples
    # of 8, e.g. 111) is compiled for padded heads only.
    if not f["ALIGNED16"] and not f["PADDED_HEAD"]:
        return False
    return True


def _fwd_candidate(f, c, arch):
    """The GPU-sweep candidates of fwd_configs (compile-checked: no spills,
    fits shared memory) plus the default."""
    cand = TUNING_CANDIDATES[90 if arch >= 90 else 80][f["BLOCK_DMODEL"]]
    cfg = (c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"])
    fits = _fwd_shared_bytes(f, c) <= _shared_limit(arch)
    return (cfg in cand and fits) or dict(c) == _fwd_default(f, arch)


def _fwd_default(f, arch):
    return pick_config(arch, f["BLOCK_DMODEL"] - (1 if f["PADDED_HEAD"] else 0), f["dtype"], f["ENABLE_DROPOUT"])


# Query-side tensors index rows by m, key-side ones by n (the kernels' names).
_FWD_Q, _FWD_K, _FWD_V, _FWD_O = (head_tensor("Q", "zhm"), head_tensor("K", "zhn"), head_tensor("V", "zhn"),
                                  head_tensor("O", "zhm"))

attn_fwd = Kernel(
    name="attn_fwd",
    source="tritonsrc/flash/fwd.py",
    function="attn_fwd",
    args=[
        _FWD_Q.ptr, _FWD_K.ptr, _FWD_V.ptr, _FWD_O.ptr, LSE.ptr,
        Arg("cu_seqlens_q", "*i32"), Arg("cu_seqlens_k", "*i32"),
        Arg("philox_seed_ptr", "*i64"), Arg("philox_offset_ptr", "*i64"),
        Arg("sm_scale", "fp32"), Arg("dropout_p", "fp32"),
        *_FWD_Q.strides, *_FWD_K.strides, *_FWD_V.strides, *_FWD_O.strides, *LSE.strides,
        Arg("num_seqs", "i32"), Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"),
        Arg("max_seqlen_q", "i32"), Arg("max_seqlen_k", "i32"), Arg("head_dim", "i32"),
        Arg("total_q", "i32"), Arg("total_k", "i32"),
        *FEATURE_ARGS,
    ],
    functional={
        "dtype": ["fp16", "bf16", "fp32"],
        "BLOCK_DMODEL": HEAD_DIM_BUCKETS,
        "PADDED_HEAD": [False, True],
        "CAUSAL_TYPE": [0, 1, 2],
        "IS_VARLEN": [False, True],
        "ENABLE_DROPOUT": [False, True],
        **FEATURE_FUNCTIONALS,
        **VDIM_FUNCTIONALS,
    },
    unaligned_variant=True,
    valid=_fwd_valid,
    fallbacks=_flash_fallbacks,
    rare=_flash_rare,
    profiles=_FLASH_PROFILES,
    tuning=TuningSpace(
        params={"BLOCK_M": [64, 128], "BLOCK_N": [32, 64, 128], "num_warps": [4, 8], "num_stages": [2, 3, 4]},
        default=_fwd_default,
        prune=lambda f, c, arch: _fwd_candidate(f, c, arch),
    ),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    autotune_keys=[AutotuneKey("max_seqlen_q", SEQLEN_BINS), AutotuneKey("max_seqlen_k", SEQLEN_BINS)],
    doc="flash attention forward: O = softmax(scale * Q K^T) V, LSE",
)


# ----------------------------------------------------------------------------
# Backward: preprocess (delta = rowsum(dO * O)) -> dK/dV -> dQ. No atomics:
# each program owns its outputs, so the result is deterministic.
# ----------------------------------------------------------------------------
def _bwd_valid(f, arch):
    if "LOCAL_WINDOW" in f and not _features_valid(f):
        return False
    return f["ALIGNED16"] or f["PADDED_HEAD"]


def _bwd_pruner(kernel):
    def prune(f, c, arch):
        cand = {tuple(x) for x in bwd_configs.CANDIDATE_CONFIGS[kernel][f["BLOCK_DMODEL"]]}
        cfg = (c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"])
        return cfg in cand or dict(c) == _bwd_default(kernel)(f, arch)
    return prune


def _bwd_default(kernel):
    return lambda f, arch: bwd_configs.pick_config(arch, f["BLOCK_DMODEL"], f["dtype"], kernel, f["ENABLE_DROPOUT"])


def _pre_valid(f, arch):
    """ZERO_DQ_ACC (also zero the fp32 dQ accumulator) serves the sm_90
    backward's atomic dQ path only (rules_flash_hopper.bwd_dkdv_hopper)."""
    if f["ZERO_DQ_ACC"]:
        return (arch == 90 and f["dtype"] != "fp32" and f["BLOCK_DMODEL"] in (64, 128) and not f["PADDED_HEAD"]
                and not f["IS_VARLEN"] and f["ALIGNED16"])
    return _bwd_valid(f, arch)


_BWD_FUNCTIONAL = {
    "dtype": ["fp16", "bf16", "fp32"],
    "BLOCK_DMODEL": HEAD_DIM_BUCKETS,
    "PADDED_HEAD": [False, True],
    "CAUSAL_TYPE": [0, 1, 2],
    "IS_VARLEN": [False, True],
    "ENABLE_DROPOUT": [False, True],
}
_BWD_TUNING = {"BLOCK_M": [16, 32, 64, 128], "BLOCK_N": [16, 32, 64, 128], "num_warps": [4, 8],
               "num_stages": [1, 2, 3]}

_BWD_DO = head_tensor("DO", "zhm")
# The fp32 dQ accumulator: [B, Hq, Sq, D].
_DQA = Tensor("DQA", "fp32", "zhm", rank=4, prefix="stride_dqa_")

bwd_preprocess = Kernel(
    name="bwd_preprocess",
    source="tritonsrc/flash/bwd_preprocess.py",
    function="bwd_preprocess",
    args=[
        _FWD_O.ptr, _BWD_DO.ptr, DELTA.ptr, _DQA.ptr,
        Arg("cu_seqlens_q", "*i32"),
        *_FWD_O.strides, *_BWD_DO.strides, *DELTA.strides, *_DQA.strides,
        Arg("num_heads_q", "i32"), Arg("max_seqlen_q", "i32"), Arg("head_dim", "i32:8"),
        Arg("total_q", "i32"),
    ],
    functional={"dtype": ["fp16", "bf16", "fp32"], "BLOCK_DMODEL": HEAD_DIM_BUCKETS, "PADDED_HEAD": [False, True],
                "IS_VARLEN": [False, True], "ZERO_DQ_ACC": [False, True]},
    unaligned_variant=True,
    valid=_pre_valid,
    fallbacks=_flash_fallbacks,
    rare=_flash_rare,
    profiles=_FLASH_PROFILES,
    grid_args=["num_seqs"],
    tuning=TuningSpace(
        params={"BLOCK_M": [64, 128], "num_warps": [4], "num_stages": [1]},
        default=lambda f, arch: bwd_configs.pre_config(f["BLOCK_DMODEL"]),
    ),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    doc="flash backward preprocess: delta = rowsum(dO * O)",
)

_BWD_COMMON_ARGS = [
    Arg("cu_seqlens_q", "*i32"), Arg("cu_seqlens_k", "*i32"),
    Arg("philox_seed_ptr", "*i64"), Arg("philox_offset_ptr", "*i64"),
    Arg("sm_scale", "fp32"), Arg("dropout_p", "fp32"),
]
_BWD_TAIL_ARGS = [
    *LSE.strides, *DELTA.strides,
    Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"),
    Arg("max_seqlen_q", "i32"), Arg("max_seqlen_k", "i32"), Arg("head_dim", "i32:8"),
    Arg("total_q", "i32"), Arg("total_k", "i32"),  # varlen: packed rows, cu_seqlens clamp into them
    *FEATURE_ARGS,
]

_BWD_Q, _BWD_K, _BWD_V = head_tensor("Q", "zhm"), head_tensor("K", "zhn"), head_tensor("V", "zhn")


def _bwd_kernel(name, outputs, grid, doc):
    """dK/dV and dQ share everything but their outputs (Tensors) and grid."""
    return Kernel(
        name=name,
        source=f"tritonsrc/flash/{name}.py",
        function=name,
        args=[
            *(t.ptr for t in (_BWD_Q, _BWD_K, _BWD_V, _BWD_DO, *outputs)),
            LSE.ptr, DELTA.ptr,
            *_BWD_COMMON_ARGS,
            *(s for t in (_BWD_Q, _BWD_K, _BWD_V, _BWD_DO, *outputs) for s in t.strides),
            *_BWD_TAIL_ARGS,
        ],
        functional={**_BWD_FUNCTIONAL, **FEATURE_FUNCTIONALS, **VDIM_FUNCTIONALS},
        unaligned_variant=True,
        valid=_bwd_valid,
        fallbacks=_flash_fallbacks,
        rare=_flash_rare,
        profiles=_FLASH_PROFILES,
        grid_args=["num_seqs"],
        tuning=TuningSpace(params=_BWD_TUNING, default=_bwd_default(name[4:]), prune=_bwd_pruner(name[4:])),
        grid=grid,
        autotune_keys=[AutotuneKey("max_seqlen_q", SEQLEN_BINS), AutotuneKey("max_seqlen_k", SEQLEN_BINS)],
        doc=doc,
    )


bwd_dkdv = _bwd_kernel("bwd_dkdv", (head_tensor("DK", "zhn"), head_tensor("DV", "zhn")),
                       ("cdiv(max_seqlen_k, BLOCK_N)", "num_seqs * num_heads_k", "1"),
                       "flash backward dK, dV (summed over each kv head's query heads)")
bwd_dq = _bwd_kernel("bwd_dq", (head_tensor("DQ", "zhm"),),
                     ("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"), "flash backward dQ")

# The debug keep mask of a forward call (return_dropout_mask), regenerated
# from its seed/offset instead of a mask-writing copy of every dropout
# functional of attn_fwd.
_MASK = Tensor("dropout_mask", "i8", "zhm", rank=4, prefix="stride_m")  # [B, Hq, Sq, Sk]

attn_dropout_mask = Kernel(
    name="attn_dropout_mask",
    source="tritonsrc/flash/dropout_mask.py",
    function="attn_dropout_mask",
    args=[
        Arg("philox_seed_ptr", "*i64"), Arg("philox_offset_ptr", "*i64"), _MASK.ptr,
        Arg("cu_seqlens_q", "*i32"), Arg("cu_seqlens_k", "*i32"),
        Arg("dropout_p", "fp32"),
        *_MASK.strides,
        Arg("num_heads_q", "i32"), Arg("max_seqlen_q", "i32"), Arg("max_seqlen_k", "i32"),
        Arg("total_q", "i32"), Arg("total_k", "i32"),
    ],
    functional={"IS_VARLEN": [False, True]},
    grid_args=["num_seqs"],
    tuning=TuningSpace(params={k: [v] for k, v in DROPOUT_MASK_CONFIG.items()},
                       default=lambda f, arch: dict(DROPOUT_MASK_CONFIG)),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    doc="flash forward's dropout keep mask (int8), regenerated from the philox seed/offset",
)

FLASH_KERNELS = [attn_fwd, bwd_preprocess, bwd_dkdv, bwd_dq, attn_dropout_mask]


# ----------------------------------------------------------------------------
# V head dim != Q/K head dim: attn_fwd, bwd_dkdv and bwd_dq with BLOCK_DV != 0
# (the preprocess runs over V's head dim with its usual kernel).
# ----------------------------------------------------------------------------
def _vdim_pair(f):
    return VDIM_PAIRS.get((f["BLOCK_DMODEL"], f["PADDED_HEAD"])) == f["BLOCK_DV"]


def _vdim_padded_fallback(f):
    """An exact Q/K head dim runs its bucket's padded kernel if that has the pair."""
    g = dict(f, PADDED_HEAD=True)
    return [g] if not f["PADDED_HEAD"] and _vdim_pair(g) else []


def _vdim_ci(f):
    """One functional per kernel (fp16, Q/K 128 with V 64, bottom-right causal):
    CI compiles the BLOCK_DV code; the interpreter tests check its results."""
    return f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 128 and f["CAUSAL_TYPE"] == 2 and not f["IS_VARLEN"]


def _vdim_kernel(rule):
    """`rule`'s Triton kernel for the V head dims of VDIM_PAIRS, as a kernel of
    its own: a BLOCK_DV dimension in `rule` would triple its dense dispatch
    table (~0.25 MB of C++ data per kernel) for 2 valid values in 36."""
    functional = {**rule.functional, "dtype": ["fp16", "bf16"], "BLOCK_DMODEL": sorted({b for b, _ in VDIM_PAIRS}),
                  "ENABLE_DROPOUT": [False], "LOCAL_WINDOW": [False], "SCORE_MOD": [0],
                  "BLOCK_DV": sorted(set(VDIM_PAIRS.values()))}
    return dataclasses.replace(
        rule, name=f"{rule.name}_vdim", functional=functional, unaligned_variant=False,
        valid=lambda f, arch: _vdim_pair(f), fallbacks=_vdim_padded_fallback,
        rare=lambda f: bool(_vdim_padded_fallback(f)), profiles={"ci": _vdim_ci},
        doc=f"{rule.doc}; V head dim BLOCK_DV != the Q/K head dim")


attn_fwd_vdim, bwd_dkdv_vdim, bwd_dq_vdim = VDIM_KERNELS = [_vdim_kernel(k) for k in (attn_fwd, bwd_dkdv, bwd_dq)]
FLASH_KERNELS += VDIM_KERNELS


# ----------------------------------------------------------------------------
# Decode over a KV cache (flash_attn_with_kvcache): append, split-KV attention,
# combine. Head dims that are multiples of 8 run in the 64/128/256 buckets
# (always masked on d: no PADDED_HEAD functional, the loads stay 16-byte).
# One default config per functional keeps the release cubin count small.
# ----------------------------------------------------------------------------
from tritonsrc.flash.decode_configs import (  # noqa: E402
    DECODE_HEAD_BUCKETS, DECODE_KEYS_PER_SPLIT_BINS, PAGE_STEP_KEYS, PAGE_TILE_KEYS, combine_config,
    default_decode_config)

_DECODE_DTYPES = ["fp16", "bf16"]


def _decode_candidate(f, c, arch):
    """Shared memory of the pipelined K and V tiles ((num_stages - 1) buffers
    of 2 * BLOCK_N * D bf16/fp16) within the 227 KB an sm_90 CTA may use
    (sm_80: 163 KB), and at most 64 KB of K per tile (registers)."""
    tile = 2 * c["BLOCK_N"] * f["BLOCK_DMODEL"] * 2
    smem = max(c["num_stages"] - 1, 1) * tile + c["BLOCK_M"] * f["BLOCK_DMODEL"] * 2
    limit = 227 * 1024 if arch >= 90 else 163 * 1024
    if f.get("PAGE_TILES") == 1 and c["BLOCK_N"] > PAGE_TILE_KEYS:
        return False  # a tile must fit every page the operator sends here
    if f.get("PAGE_TILES") == 2 and c["BLOCK_N"] < PAGE_STEP_KEYS:
        return False  # and hold whole pages of 16 or 32 keys here
    return (smem <= limit and c["BLOCK_N"] * f["BLOCK_DMODEL"] <= 16384) \
        or dict(c) == _decode_default(f)


def _decode_default(f):
    return default_decode_config(f["BLOCK_DMODEL"], f.get("PAGE_TILES", 0))


# Decode tensors are [B, S, H, D] (q, o, new keys: "zmh") or a cache
# [B or pages, S, H, D] ("znh"); the head dim is contiguous.
_DEC_Q, _DEC_O = head_tensor("Q", "zmh"), head_tensor("O", "zmh")
_CACHE_K, _CACHE_V = head_tensor("K", "znh"), head_tensor("V", "znh")
_K_NEW, _V_NEW = head_tensor("K_new", "zmh", "stride_kn"), head_tensor("V_new", "zmh", "stride_vn")
_BLOCK_TABLE = Tensor("block_table", "i32", ("bt",), rank=2, prefix="stride_")  # [B, blocks per sequence]


kv_append = Kernel(
    name="kv_append",
    source="tritonsrc/flash/kv_append.py",
    function="kv_append",
    pdl=True,
    args=[
        _K_NEW.ptr, _V_NEW.ptr, _CACHE_K.ptr, _CACHE_V.ptr,
        Arg("cache_seqlens", "*i32"), _BLOCK_TABLE.ptr,
        *_K_NEW.strides, *_V_NEW.strides, *_CACHE_K.strides, *_CACHE_V.strides, *_BLOCK_TABLE.strides,
        Arg("seqlen_new", "i32"), Arg("num_heads_k", "i32"), Arg("head_dim", "i32"), Arg("capacity", "i32"),
        Arg("page_size", "i32:16"), Arg("num_blocks", "i32"),
    ],
    functional={"dtype": _DECODE_DTYPES, "BLOCK_DMODEL": list(DECODE_HEAD_BUCKETS), "PAGED": [False, True]},
    grid_args=["num_seqs"],
    tuning=TuningSpace(params={"BLOCK_M": [16], "num_warps": [4], "num_stages": [1]},
                       default=lambda f, arch: {"BLOCK_M": 16, "num_warps": 4, "num_stages": 1}),
    grid=("cdiv(seqlen_new, BLOCK_M)", "num_seqs * num_heads_k", "1"),
    doc="KV cache: write new keys/values at each sequence's cached length (in place)",
)

attn_decode = Kernel(
    name="attn_decode",
    source="tritonsrc/flash/decode.py",
    function="attn_decode",
    pdl=True,
    args=[
        _DEC_Q.ptr, _CACHE_K.ptr, _CACHE_V.ptr, _DEC_O.ptr,
        LSE.ptr, Arg("O_part", "*fp32:16"), Arg("LSE_part", "*fp32"),
        Arg("cache_seqlens", "*i32"), _BLOCK_TABLE.ptr,
        Arg("sm_scale", "fp32"),
        *_DEC_Q.strides, *_CACHE_K.strides, *_CACHE_V.strides, *_DEC_O.strides,
        *LSE.strides, *_BLOCK_TABLE.strides,
        Arg("seqlen_q", "i32"), Arg("seqlen_new", "i32"), Arg("num_seqs", "i32"), Arg("num_heads_q", "i32"),
        Arg("num_heads_k", "i32"), Arg("head_dim", "i32:8"), Arg("capacity", "i32"), Arg("page_size", "i32:16"),
        Arg("num_blocks", "i32"), Arg("num_splits", "i32"), Arg("causal", "i32"),
        Arg("window_left", "i32"), Arg("window_right", "i32"), Arg("softcap", "fp32"), *ALIBI.args,
    ],
    # SCORE_MOD: 0 none, 1 softcap, 2 ALiBi (the sliding window is runtime: it
    # only moves the tile range and the edge masks). PAGE_TILES, how a paged
    # cache is walked (decode_configs.page_tiles): 0 a lookup per key, 1 per
    # tile (pages a multiple of PAGE_TILE_KEYS), 2 whole pages of 16 or 32 per tile.
    functional={"dtype": _DECODE_DTYPES, "BLOCK_DMODEL": list(DECODE_HEAD_BUCKETS), "PAGED": [False, True],
                "SCORE_MOD": [0, 1, 2], "PAGE_TILES": [0, 1, 2]},
    valid=lambda f, arch: f["PAGED"] or f["PAGE_TILES"] == 0,
    tuning=TuningSpace(
        params={"BLOCK_M": [16, 32], "BLOCK_N": [16, 32, 64, 128], "num_warps": [4, 8], "num_stages": [2, 3, 4, 5]},
        default=lambda f, arch: _decode_default(f),
        prune=_decode_candidate,
    ),
    # keys_per_split = cdiv(capacity, num_splits), set by the operator: short
    # splits (many splits of few keys) want short pipelines and small tiles,
    # long ones deep pipelines (python/tune_decode.py fills the LUT).
    grid_args=["keys_per_split"],
    autotune_keys=[AutotuneKey("keys_per_split", bins=list(DECODE_KEYS_PER_SPLIT_BINS))],
    grid=("num_splits", "num_seqs * num_heads_k", "cdiv(seqlen_q * (num_heads_q / num_heads_k), BLOCK_M)"),
    doc="flash decode: attention over a contiguous or paged KV cache, split-KV partials",
)

attn_decode_combine = Kernel(
    name="attn_decode_combine",
    source="tritonsrc/flash/decode_combine.py",
    function="attn_decode_combine",
    pdl=True,
    args=[
        _DEC_O.ptr, LSE.ptr, Arg("O_part", "*fp32:16"), Arg("LSE_part", "*fp32"),
        *_DEC_O.strides, *LSE.strides,
        Arg("seqlen_q", "i32"), Arg("num_heads_q", "i32"), Arg("head_dim", "i32:8"), Arg("total_rows", "i32"),
        Arg("num_splits", "i32"),
    ],
    functional={"dtype": _DECODE_DTYPES, "BLOCK_DMODEL": list(DECODE_HEAD_BUCKETS)},
    # One chunk size per head-dim bucket (a 16 KB tile of partials).
    tuning=TuningSpace(params={"BLOCK_S": [16, 32, 64], "num_warps": [4], "num_stages": [1]},
                       default=lambda f, arch: combine_config(f["BLOCK_DMODEL"]),
                       prune=lambda f, c, arch: dict(c) == combine_config(f["BLOCK_DMODEL"])),
    grid=("total_rows", "1", "1"),
    doc="flash decode: combine the split-KV partial outputs by their log-sum-exps",
)

DECODE_KERNELS = [kv_append, attn_decode, attn_decode_combine]
FLASH_KERNELS += DECODE_KERNELS


def _decode_ci(f):
    """fp16, head dim 128; the score modifiers in the paged kernel only."""
    return f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 128 and (f.get("SCORE_MOD", 0) == 0 or f["PAGED"])


declare_profile_subsets(DECODE_KERNELS, "ci", {k.name: _decode_ci for k in DECODE_KERNELS})
