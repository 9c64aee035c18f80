"""The Hopper (sm_90) flash forward: a Gluon kernel with host-side TMA
descriptors (tritonsrc/flash/fwd_hopper.py). v2src/ops/flash_fwd.cc routes the
calls it serves (batched fp16/bf16, head dim 64, 96, 128, 192 or 256; aligned,
no dropout or attention features) to it on sm_90 and everything else to
attn_fwd. Head dim 96 runs in 128-wide tiles (TMA zero-fills the padding), 192
in three 64-column blocks (no padded work).

Schedules (a tuning parameter): 0 serial, 3 ping-pong, 4 the persistent
ping-pong (one CTA per SM; fwd_hopper_persistent.py), 5 the ping-pong with K
and V released apart (head dim 256's default: 1.14-1.19x the serial form).

Measured on the H200 (bf16, 16k tokens; docs/notes-flash-perf.md): at head
dim 128 it runs 1.15-1.29x the tuned Triton kernel; at 192 1.8x (the Triton
kernel pads to 256 less well), at 256 1.25-2.1x (SCHEDULE 5). At head dim 64 the
serial schedule needs 128 registers per thread to fit two CTAs per SM
(maxnreg; without the cap ptxas took 130 and it ran at 0.76-0.86x the Triton
kernel). Causal head dim 64 was the Triton kernel's from the second session
(361 / 421 TF/s at 2k / 8k against this kernel's best form then, 315 / 403, H200).
The thirty-fourth session measured every form again (H100, JIT, graph-timed):
the same capped serial form runs 1.04-1.08x the Triton kernel's tuned configs
from seqlen 2048 (0.97x at 512), so it is the default there too; through the
build (thirty-fifth, H100, bench_flash over both routes) 0.99 / 1.01 / 1.04 /
1.08x at 512 / 1k / 2k / 8k.
"""
from python.kernel_rules import Arg, AutotuneKey, Kernel, Tensor, TmaArg, TuningSpace, pow2ceil
from python.rules_flash import DELTA, LSE, head_tensor

SEQLEN_BINS = [128, 512, 1024, 2048, 4096, 8192]  # as attn_fwd's, so one tuner covers both
BLOCK_M = 128  # two warpgroups of 64 query rows
SHARED_LIMIT = 227 * 1024

# (BLOCK_N, NUM_STAGES, SCHEDULE, num_warps) measured on the H200 (docs/notes-flash-perf.md):
# serial with 8 warps (two CTAs per SM at BLOCK_N 64 / 2 stages) and the
# warp-specialized ping-pong (4 warps per consumer partition, plus a loader warp).
# (BLOCK_N, NUM_STAGES, SCHEDULE, num_warps, maxnreg)
# Head dim 256 fits BLOCK_N 64 with 2 stages (32-key tiles with 4 stages ran 0.82-0.91x their 64-key
# twins on the H200, twenty-ninth session: removed).
CANDIDATES = [(64, 2, 0, 8, 0), (128, 2, 0, 8, 0), (128, 3, 0, 8, 0), (128, 3, 0, 8, 128), (128, 3, 3, 4, 0),
              (64, 4, 3, 4, 0), (64, 2, 3, 4, 0)]
# SCHEDULE 5, the ping-pong with K and V released apart: a consumer's
# turn j reads K(j) and V(j - 1), so K(j)'s stage can refill once both Q K^T(j) retired, a turn
# before V(j)'s; with one barrier for both (SCHEDULE 3) the loader waits for P V(j) to refill either,
# which leaves K one turn less between copy and use than V (docs/notes-flash-perf.md). H200,
# twenty-ninth session: at head dim 256 (two stages) 1.14-1.19x the serial form and the tuner's pick
# in all 30 bins; at 128 faster than SCHEDULE 3 with two stages, 0.98x with three. The ping-pong's forms with it.
CANDIDATES += [(n, st, 5, w, r) for n, st, sched, w, r in CANDIDATES if sched == 3]
# SCHEDULE 4, the persistent ping-pong (one CTA per SM, 4 warps), hides each
# query block's prologue and epilogue under the next block's loads: the H200
# tuner (graph-timed) picked it in 12 of 30 head-dim-128 bins, at 1.00-1.16x the
# ping-pong's speed there (docs/notes-flash-perf.md, sixth session).
# Its (BLOCK_N, NUM_STAGES): the forms that compile without spills at 232
# registers per consumer thread (test/cpu/test_flash_hopper_compiles.py): BLOCK_N
# 64 with 4 stages for every call, 128 with 3 for non-causal ones (causal 128-key
# tiles spill 56 bytes at head dim 128); head dims 64, 96, 128 (256 spills).
PERSISTENT_HEAD_DIMS = (64, 96, 128)
CANDIDATES_PERSISTENT = [(64, 4), (128, 3)]


def _persistent_form(f, c):
    return (f["BLOCK_DMODEL"] in PERSISTENT_HEAD_DIMS and c["num_warps"] == 4 and c["maxnreg"] == 0
            and (c["BLOCK_N"], c["NUM_STAGES"]) in CANDIDATES_PERSISTENT
            and (c["BLOCK_N"] == 64 or f["CAUSAL_TYPE"] == 0))


# RESCALE_TH 8 (a candidate at head dim 256 only): a row keeps its running max until a
# tile's max exceeds it by more than 2**8, and the O accumulator's multiply by the rescale
# factors is skipped while no row of the warpgroup moved (fwd_hopper_common._softmax_step /
# _rescaled). The multiply is 128 of the serial loop's 506 SASS instructions a tile at head
# dim 256 but 64 of the ping-pong's 593 at 128, and the skip costs a reduction across the
# warps: on an H100 (bench/results/h100/flash_lazy_rescale_sm90.json) head dim 128 ran
# 0.96-1.005x its eager twin, 256 0.93-1.04x (the serial form wins non-causal at 8k only); under
# SCHEDULE 5 on the H200 0.98-1.006x, the tuner's pick in 11 of 30 head-dim-256 bins (by under 5%).

# Head dim 192: three 64-column blocks, BLOCK_N 64 (a third stage fits), serial or ping-pong, and the
# ping-pong with K and V released apart (SCHEDULE 5; not yet measured at 192: its 64-key turns are
# shorter than 128's, so a copy issued a turn earlier may matter more than its 3 stages suggest).
CANDIDATES_192 = [(64, 2, 0, 8, 0), (64, 3, 0, 8, 0), (64, 2, 3, 4, 0), (64, 3, 3, 4, 0), (64, 2, 5, 4, 0),
                  (64, 3, 5, 4, 0)]


def _shared_bytes(f, c):
    d = _tile_cols(f["BLOCK_DMODEL"])  # as the kernel's tiles hold it
    return 2 * d * (BLOCK_M + 2 * c["BLOCK_N"] * c["NUM_STAGES"])


def _tile_cols(head_dim):
    """Columns the kernel's tiles hold: the next power of two, except 192 (three 64-column blocks)."""
    return head_dim if head_dim == 192 else pow2ceil(head_dim)


def _candidate(f, c, arch):
    if c["RESCALE_TH"] and f["BLOCK_DMODEL"] != 256:
        return False  # measured no gain below 256 (above); 192's three accumulators lack the branch
    cfg = (c["BLOCK_N"], c["NUM_STAGES"], c["SCHEDULE"], c["num_warps"], c["maxnreg"])
    if c["SCHEDULE"] == 4:
        return _persistent_form(f, c)
    if f["BLOCK_DMODEL"] == 64 and c["SCHEDULE"] == 0 and c["BLOCK_N"] == 128 and c["maxnreg"] != 128:
        # Two CTAs per SM need <= 128 registers: without the cap the AOT form takes 130 (the
        # tuner's JIT, specialized on the call's values, 127), and ran at 0.65-0.8x in bench_flash.
        return False
    allowed = CANDIDATES_192 if f["BLOCK_DMODEL"] == 192 else CANDIDATES
    return cfg in allowed and _shared_bytes(f, c) <= SHARED_LIMIT


def _default(f, arch):
    """Ping-pong at head dim 128 (and 96, in 128-wide tiles) and 192 (native three-block tiles, BLOCK_N
    64, 3 stages: the graph-timed H200 tuner's pick in all 30 bins, seventh session); at 256 the
    ping-pong with K and V released apart (SCHEDULE 5), BLOCK_N 64, 2 stages (what fits in shared
    memory; the H200 tuner's pick in all 30 bins, twenty-ninth session); at 64 serial, two CTAs per SM.
    Every default rescales the accumulator at every tile (RESCALE_TH 0)."""
    eager = {"BLOCK_M": BLOCK_M, "RESCALE_TH": 0}
    if f["BLOCK_DMODEL"] in (96, 128):
        return {**eager, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 3, "num_warps": 4, "maxnreg": 0}
    if f["BLOCK_DMODEL"] == 192:  # ping-pong won every tuned bin, 1.17-1.35x the serial form
        return {**eager, "BLOCK_N": 64, "NUM_STAGES": 3, "SCHEDULE": 3, "num_warps": 4, "maxnreg": 0}
    if f["BLOCK_DMODEL"] > 128:
        return {**eager, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 5, "num_warps": 4, "maxnreg": 0}
    return {**eager, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 0, "num_warps": 8, "maxnreg": 128}


def _valid(f, arch):
    """wgmma and setmaxnreg are sm_90a: no other arch (nor PTX JIT for a newer
    one) runs it."""
    return arch == 90


# Columns per TMA block: 64 (128-byte swizzle) when the head dim is a multiple
# of 64, else 32 (head dim 96). One expression that C++ and Python both evaluate.
TMA_COLS = "(64 - 32 * (BLOCK_DMODEL % 64 != 0))"


def _qkv(name, rows):
    """Over the view [B, H, D/c, S, c] of a [B, S, H, D] tensor, c = TMA_COLS
    (fwd_hopper.py): the box is the whole head dim, except that head dim 96
    reads 4 blocks (the fourth zero-filled) and 192 one block per load (the
    kernel loads its three 64-column blocks separately)."""
    blocks = f"(1 if BLOCK_DMODEL == 192 else pow2ceil(BLOCK_DMODEL) / {TMA_COLS})"
    return TmaArg(name, "{dtype}", ("1", "1", blocks, rows, TMA_COLS))


# O is written by masked stores from the accumulator: a plain [B, S, H, D] tensor.
_O = head_tensor("O", "zhm")
# The arguments both forward kernels open with (the varlen one's O and LSE strides of z are unused).
_FWD_HEAD_ARGS = [
    _qkv("q_desc", "BLOCK_M"), _qkv("k_desc", "BLOCK_N"), _qkv("v_desc", "BLOCK_N"),
    _O.ptr, LSE.ptr, Arg("sm_scale", "fp32"),
    *_O.strides, *LSE.strides,
]


attn_fwd_hopper = Kernel(
    name="attn_fwd_hopper",
    source="tritonsrc/flash/fwd_hopper.py",
    function="attn_fwd_hopper",
    args=[
        *_FWD_HEAD_ARGS,
        Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"), Arg("seqlen_q", "i32"), Arg("seqlen_k", "i32"),
        Arg("num_seqs", "i32"),
    ],
    functional={"dtype": ["fp16", "bf16"], "BLOCK_DMODEL": [64, 96, 128, 192, 256], "CAUSAL_TYPE": [0, 1, 2]},
    valid=_valid,
    profiles={"ci": lambda f: f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 128},
    grid_args=["num_sms"],  # the device's SM count: the persistent schedule's grid
    tuning=TuningSpace(
        params={"BLOCK_M": [BLOCK_M], "BLOCK_N": [64, 128], "NUM_STAGES": [2, 3, 4], "SCHEDULE": [0, 3, 4, 5],
                "num_warps": [4, 8], "maxnreg": [0, 128], "RESCALE_TH": [0, 8]},
        default=_default,
        prune=_candidate,
    ),
    grid=("select(SCHEDULE == 4, grid_min(cdiv(seqlen_q, BLOCK_M) * num_seqs * num_heads_q, num_sms), "
          "cdiv(seqlen_q, BLOCK_M))",
          "select(SCHEDULE == 4, 1, num_seqs * num_heads_q)", "1"),
    autotune_keys=[AutotuneKey("seqlen_q", SEQLEN_BINS), AutotuneKey("seqlen_k", SEQLEN_BINS)],
    doc="flash attention forward for sm_90 (Gluon: TMA, wgmma, ping-pong warp specialization, persistent)",
)


def _varlen_candidate(f, c, arch):
    """The serial schedule's candidates (the ping-pongs share a V stage: fwd_hopper_varlen.py)."""
    return c["SCHEDULE"] == 0 and _candidate(f, c, arch)


# Packed variable-length batches ([total, H, D] with cu_seqlens) on the serial schedule. The
# descriptors are attn_fwd_hopper's 5-D view with one batch of total rows. Head dim 64 only: the
# kernel also runs 128 (its GPU tests passed there), but at 128 the serial form only ties the Triton
# varlen kernel (H100, thirty-sixth session, bench_flash_varlen both routes: 0.97-1.01x at 512-8192,
# against 1.19-1.44x at 64), so 128 stays on attn_fwd and its images are not built.
attn_fwd_hopper_varlen = Kernel(
    name="attn_fwd_hopper_varlen",
    source="tritonsrc/flash/fwd_hopper_varlen.py",
    function="attn_fwd_hopper_varlen",
    args=[
        *_FWD_HEAD_ARGS,
        Arg("cu_seqlens_q", "*i32"), Arg("cu_seqlens_k", "*i32"),
        Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"), Arg("max_seqlen_q", "i32"),
        Arg("max_seqlen_k", "i32"), Arg("total_q", "i32"), Arg("total_k", "i32"),
    ],
    functional={"dtype": ["fp16", "bf16"], "BLOCK_DMODEL": [64], "CAUSAL_TYPE": [0, 1, 2]},
    valid=_valid,
    profiles={"ci": lambda f: False},
    grid_args=["num_seqs"],
    tuning=TuningSpace(
        params={"BLOCK_M": [BLOCK_M], "BLOCK_N": [64, 128], "NUM_STAGES": [2, 3], "SCHEDULE": [0],
                "num_warps": [8], "maxnreg": [0, 128], "RESCALE_TH": [0]},
        default=_default,  # the batched kernel's (serial at head dim 64)
        prune=_varlen_candidate,
    ),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    autotune_keys=[AutotuneKey("max_seqlen_q", SEQLEN_BINS), AutotuneKey("max_seqlen_k", SEQLEN_BINS)],
    doc="flash attention forward for sm_90, packed variable-length batches (Gluon, serial schedule)",
)

# ---------------------------------------------------------------------------
# Backward (tritonsrc/flash/bwd_hopper.py): dK/dV per key block with TMA and
# wgmma; dQ either by fp32 atomics into a caller workspace (FUSE_DQ, then
# bwd_dq_convert) or by the Triton bwd_dq kernel (deterministic).
# v2src/ops/flash_bwd.cc routes batched fp16/bf16 head dim 64 / 128 calls
# without dropout or attention features here on sm_90.
# ---------------------------------------------------------------------------
def _bwd_desc(name, rows):
    """Over the view [B, H, D/64, S, 64] of a [B, S, H, D] tensor (bwd_hopper.py)."""
    return TmaArg(name, "{dtype}", ("1", "1", "BLOCK_DMODEL / 64", rows, "64"))


_DK, _DV = head_tensor("DK", "zhn"), head_tensor("DV", "zhn")
# The fp32 dQ accumulator, q's shape [B, S, H, D], rows 16-byte aligned (the
# atomics pair up); unused (null, strides 0) without FUSE_DQ.
_DQA = Tensor("DQA", "fp32", "zhm", rank=4, align=16, stride="i32:16", prefix="stride_dqa_")
# (BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps): 64 query rows per step
# keep S^T, dP^T and dK/dV in registers (128 spill at head dim 64); two
# warpgroups of 64 keys each, warp-specialized (SCHEDULE 1: a worker
# warpgroup refills Q/dO and issues the dQ atomics; +3-17% over one partition,
# bench/results/flash_bwd_hopper_ws_sm90.json). The tuner may pick one
# partition, or one warpgroup of 64 keys (two CTAs per SM) at head dim 64,
# faster at short sequences (bench/results/flash_bwd_hopper_r2_sm90.json); at
# 128 its dQ tile spills.
BWD_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 2, "SCHEDULE": 1, "num_warps": 8}
BWD_SERIAL = dict(BWD_CONFIG, SCHEDULE=0)
BWD_ONE_WARPGROUP = {"BLOCK_M": 64, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 0, "num_warps": 4}


def _bwd_candidate(f, c, arch):
    c = dict(c)
    return c in (BWD_CONFIG, BWD_SERIAL) or (c == BWD_ONE_WARPGROUP and f["BLOCK_DMODEL"] == 64)


def _bwd_ci(f):
    return f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 64  # as bwd_preprocess's and bwd_dq's ci subset


bwd_dkdv_hopper = Kernel(
    name="bwd_dkdv_hopper",
    source="tritonsrc/flash/bwd_hopper.py",
    function="bwd_dkdv_hopper",
    args=[
        _bwd_desc("q_desc", "BLOCK_M"), _bwd_desc("k_desc", "BLOCK_N"), _bwd_desc("v_desc", "BLOCK_N"),
        _bwd_desc("do_desc", "BLOCK_M"),
        _DK.ptr, _DV.ptr, _DQA.ptr, LSE.ptr, DELTA.ptr, Arg("sm_scale", "fp32"),
        *_DK.strides, *_DV.strides, *_DQA.strides, *LSE.strides, *DELTA.strides,
        Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"), Arg("seqlen_q", "i32"), Arg("seqlen_k", "i32"),
    ],
    functional={"dtype": ["fp16", "bf16"], "BLOCK_DMODEL": [64, 128], "CAUSAL_TYPE": [0, 1, 2],
                "FUSE_DQ": [False, True]},
    valid=lambda f, arch: arch == 90,  # wgmma: sm_90a only
    profiles={"ci": _bwd_ci},
    grid_args=["num_seqs"],
    tuning=TuningSpace(params={"BLOCK_M": [64], "BLOCK_N": [64, 128], "NUM_STAGES": [2], "SCHEDULE": [0, 1],
                               "num_warps": [4, 8]},
                       default=lambda f, arch: dict(BWD_CONFIG), prune=_bwd_candidate),
    grid=("cdiv(seqlen_k, BLOCK_N)", "num_seqs * num_heads_k", "1"),
    autotune_keys=[AutotuneKey("seqlen_q", SEQLEN_BINS), AutotuneKey("seqlen_k", SEQLEN_BINS)],
    doc="flash attention backward dK/dV for sm_90 (Gluon: TMA, wgmma, warp specialization); dQ by fp32 atomics "
        "with FUSE_DQ",
)

_DQ = head_tensor("DQ", "zhm")

bwd_dq_convert = Kernel(
    name="bwd_dq_convert",
    source="tritonsrc/flash/bwd_dq_convert.py",
    function="bwd_dq_convert",
    args=[
        _DQA.ptr, _DQ.ptr, Arg("cu_seqlens_q", "*i32"), Arg("sm_scale", "fp32"),
        *_DQA.strides, *_DQ.strides,
        Arg("num_heads_q", "i32"), Arg("max_seqlen_q", "i32"), Arg("head_dim", "i32:8"), Arg("total_q", "i32"),
    ],
    functional={"dtype": ["fp16", "bf16"], "BLOCK_DMODEL": [64, 128], "PADDED_HEAD": [False],
                "IS_VARLEN": [False]},
    valid=lambda f, arch: arch == 90,  # only bwd_dkdv_hopper's FUSE_DQ needs it
    profiles={"ci": _bwd_ci},
    grid_args=["num_seqs"],
    tuning=TuningSpace(params={"BLOCK_M": [128], "num_warps": [4], "num_stages": [1]},
                       default=lambda f, arch: {"BLOCK_M": 128, "num_warps": 4, "num_stages": 1}),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    doc="flash backward: dQ = sm_scale * the fp32 accumulator, in dQ's type",
)

HOPPER_FLASH_KERNELS = [attn_fwd_hopper, attn_fwd_hopper_varlen, bwd_dkdv_hopper, bwd_dq_convert]
