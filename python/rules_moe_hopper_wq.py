"""The Hopper (sm_90) int4 w4a16 decode GEMM: fused_moe_gemm_wq's contract with the dequantized
weights as wgmma's register operand (tritonsrc/moe/grouped_gemm_wq_hopper.py, Gluon).

v2src/ops/moe_gemm.cc routes int4 calls it serves (aligned, align block size 16, K a multiple
of the functional BLOCK_SIZE_K, which divides group_size) to it on sm_90: by default for K tiles
of 128 (measured against fused_moe_gemm_wq: bench/experiments/int4_wgmma.py, docs/performance.md),
for K tiles of 64 too with AOTRITON_MOE_WQ_HOPPER=1, never with =0.
"""
from python.kernel_rules import Kernel, TuningSpace
from python.rules_moe import act_and_mul, fused_moe_gemm_wq
from python.rules_moe_hopper import _valid
from tritonsrc.moe import configs as C

SHARED_LIMIT = 227 * 1024


def _shared_bytes(f, c):
    """The cp.async weight ring (PREFETCH 0: NUM_STAGES tiles of BLOCK_SIZE_N rows of
    BLOCK_SIZE_K / 2 bytes) and the activation buffers (16 rows of 16-bit values; one per tile
    of a LOAD_DISTANCE pair)."""
    ring = c["NUM_STAGES"] * c["BLOCK_SIZE_N"] * f["BLOCK_SIZE_K"] // 2 if c["PREFETCH"] == 0 else 0
    x_tiles = c["NUM_STAGES"] if f.get("X_DOT_ORDER") else c["LOAD_DISTANCE"]  # X_DOT_ORDER: a ring as deep
    x_tiles *= 2 if c.get("PAIR_BLOCKS") else 1  # a second block's activation ring
    return ring + x_tiles * f["BLOCK_SIZE_M"] * f["BLOCK_SIZE_K"] * 2


def _prune(f, c, arch):
    if c["PREFETCH"] > 0 and c["NUM_STAGES"] != 2:
        return False  # register prefetch: NUM_STAGES is unused, one config stands for all
    if c["LOAD_DISTANCE"] == 2 and c["PREFETCH"] > 0:
        return False  # the two-ahead loop is the ring's
    if c["LOAD_DISTANCE"] == 2 and c["NUM_STAGES"] < 4:
        return False  # the two-ahead loop's ring holds pairs of tiles
    if f.get("X_DOT_ORDER") and c["LOAD_DISTANCE"] != 2:
        return False  # the activation ring is the two-ahead loop's
    if c.get("PAIR_BLOCKS") and not f.get("X_DOT_ORDER"):
        return False  # the second block's activations ride in the dot-order ring
    if c.get("maxnreg") and not c.get("PAIR_BLOCKS"):
        return False  # the cap is for the pair form's registers
    return _shared_bytes(f, c) <= SHARED_LIMIT


def _pairs(f):
    """X_DOT_ORDER: two blocks of an expert in one program, capped at 128 registers (4 CTAs an SM; the
    cap's 8-byte spill is outside the K loops). H100, thirty-third session
    (bench/experiments/int4_wgmma.py --x-dot-order, Mixtral-like, group 128, zero points,
    bench/results/h100/int4_pair_*): M=64 random routing GEMM1 239.0 -> 210.7 us, GEMM2 129.0 -> 116.6
    (split 4: 132.1 -> 117.6); where no expert has two blocks within 1.4% (M=1 51.8 both, M=16
    179.4 -> 181.0, balanced M=64 193.2 -> 195.1). Uncapped (151 registers, 3 CTAs an SM) it lost
    6-27% wherever blocks run alone."""
    paired = f.get("X_DOT_ORDER") and f["BLOCK_SIZE_M"] == 16  # 32-row blocks (experiments) spill capped
    return {"PAIR_BLOCKS": 1, "maxnreg": 128} if paired else {"PAIR_BLOCKS": 0, "maxnreg": 0}


fused_moe_gemm_wq_hopper = Kernel(
    name="fused_moe_gemm_wq_hopper",
    source="tritonsrc/moe/grouped_gemm_wq_hopper.py",
    function="fused_moe_wq_hopper_kernel",
    pdl=True,
    args=fused_moe_gemm_wq.args,
    functional={
        "dtype": ["fp16", "bf16"],
        "b_dtype": ["u8"],  # packed int4 only
        "MUL_ROUTED_WEIGHT": [False, True],
        "BLOCK_SIZE_M": [16],  # the decode align block size; wgmma's N
        # The K tile: one scale group or a part of one, chosen by the operator from
        # group_size (128 where it divides the groups, else 64).
        "BLOCK_SIZE_K": [64, 128],
        "SPLIT_K": [1, C.WQ_SPLIT_K],
        # Zero points read per tile, or none (symmetric checkpoints): the loads and packing of
        # the zero points leave the loop (~20 of its ~217 SASS instructions).
        "HAS_ZP": [False, True],
        # True: the activations arrive in the dot's k order (tritonsrc/moe/dot_order.py: fused_experts
        # copies the hidden states so and act_and_mul writes GEMM2's input so) and go to shared memory
        # by cp.async, with no permutation in registers. H200, twenty-ninth session
        # (bench/experiments/int4_wgmma.py --x-dot-order, Mixtral-like, group 128): 0.84-0.91x the
        # time of the permuting form at M 1-64, both GEMMs, split or not; the copy 2.2-2.5 us.
        "X_DOT_ORDER": [False, True],
    },
    # Split: the decode GEMM2 (the routed weight) only, as fused_experts runs it.
    valid=lambda f, arch: _valid(f, arch) and (f["SPLIT_K"] == 1 or f["MUL_ROUTED_WEIGHT"]),
    profiles={"ci": lambda f: f["dtype"] == "fp16" and f["BLOCK_SIZE_K"] == 128 and f["SPLIT_K"] == 1},
    tuning=TuningSpace(
        # PREFETCH 0: the weights through a cp.async ring of NUM_STAGES tiles; 1-2: tiles loaded
        # ahead into registers.
        params={"BLOCK_SIZE_N": [64, 128], "PREFETCH": [0, 1, 2], "NUM_STAGES": [2, 4, 8],
                "GROUP_SIZE_M": [1, 16],
                # One warpgroup. 128 rows as two warpgroups (8 warps) sharing one activation tile,
                # distance 2's activations through a cp.async ring of their own, and that ring capped
                # at 96 registers lost at every M on the H100 (aa09baa, bench/experiments/int4_wgmma.py:
                # GEMM1 M=1 58.8, 94.1, 106.7 us against the default's 54.7) and are gone.
                "num_warps": [4],
                # Activations, scales and zero points loaded 1 or 2 K tiles ahead of their use (2: the
                # loop unrolled by two, no register copies through the back edge; a candidate from the
                # twenty-third session's ncu and SASS, docs/notes-moe-perf.md).
                # Distance 2 also copies a pair's two weight tiles together (both 64-byte halves of
                # a 128-byte line at once).
                "LOAD_DISTANCE": [1, 2],
                # One program for two blocks of an expert (17-32 slots), each weight tile dequantized once
                # for both (grouped_gemm_wq_hopper._pair_role); X_DOT_ORDER only.
                "PAIR_BLOCKS": [0, 1],
                # The pair form takes 151 registers (3 CTAs an SM); capped at 128 (4) it spills 8 bytes,
                # outside the K loops.
                "maxnreg": [0, 128]},
        # 64 rows take 96-128 registers (4-5 CTAs an SM) and a 4-deep ring (a power of 2: the ring
        # index is a mask). LOAD_DISTANCE 2 (activations, scales and zero points loaded two K tiles
        # ahead; twenty-fourth session, H100, Mixtral int4 group 128, bench/experiments/int4_wgmma.py):
        # GEMM1 at M 1/8/64 63.9/199.1/290.2 us against the former default's (8-deep ring, distance 1)
        # 82.2/211.9/301.2; GEMM2 33.1/119.2/174.0 against 33.3/121.5/182.5 (M=1 split 4). The H200
        # preferred the 4-deep ring for GEMM1 too (58.7 vs 62.1 us at M=1, twenty-third session).
        # Copying the pair's two tiles together (twenty-fifth session, H100, same bench) then took
        # GEMM1 M 1/8/16/64 to 52.5/164.6/183.6/279.7 us (from 64.1/198.4/221.0/288.0) and GEMM2 to
        # 27.8/97.4/99.9/145.7 (M=1 split 4; from 33.1/118.9/130.6/173.5): 0.57-0.88 of the copy
        # bandwidth. 128-row tiles at distance 1 come close at M=64 (279.6/149.3 us): the tuner's
        # to pick per tokens-per-expert bin. Groups of 16 M blocks: where routing gives an expert two
        # blocks (M up to 64) they run side by side and share each weight tile through L2
        # (fused_moe_gemm's M <= 64 row, tritonsrc/moe/configs.py).
        default=lambda f, arch: {"BLOCK_SIZE_N": 64, "PREFETCH": 0, "NUM_STAGES": 4, "GROUP_SIZE_M": 16,
                                 "num_warps": 4, "LOAD_DISTANCE": 2, **_pairs(f)},
        prune=_prune,
    ),
    grid=("cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N)", "SPLIT_K", "1"),
    grid_args=["tokens_per_expert"],
    autotune_keys=fused_moe_gemm_wq.autotune_keys,
    doc="int4 w4a16 grouped GEMM for sm_90 decode (Gluon: dequantized weights as wgmma's register operand)",
)

def _dot_order_kernel(name, function, functional, ci, doc, **extra):
    """An element-wise kernel of tritonsrc/moe/dot_order.py: act_and_mul's rows in and out (args,
    tuning, grid), sm_90 only (the int4 GEMM that reads its output is)."""
    return Kernel(name=name, source="tritonsrc/moe/dot_order.py", function=function, pdl=True,
                  args=act_and_mul.args, functional=functional, valid=_valid, profiles={"ci": ci},
                  tuning=act_and_mul.tuning, grid=act_and_mul.grid, doc=doc, **extra)


# The hidden states in the int4 GEMM's dot order: GEMM1's input with X_DOT_ORDER (BLOCK_K: its K tile).
moe_dot_order_copy = _dot_order_kernel(
    "moe_dot_order_copy", "dot_order_copy_kernel", {"dtype": ["fp16", "bf16"], "BLOCK_K": [64, 128]},
    ci=lambda f: f["dtype"] == "fp16" and f["BLOCK_K"] == 128,
    doc="the hidden states with each K tile in the sm_90 int4 GEMM's dot order (X_DOT_ORDER)")

# act_and_mul writing GEMM2's input in that GEMM's dot order (K tiles of DOT_ORDER_K).
act_and_mul_dot_order = _dot_order_kernel(
    "act_and_mul_dot_order", "act_and_mul_dot_order_kernel",
    {"dtype": ["fp16", "bf16"], "ACTIVATION": [0, 1, 2, 3], "DOT_ORDER_K": [64, 128]},
    ci=lambda f: f["dtype"] == "fp16" and f["DOT_ORDER_K"] == 128,
    doc="act_and_mul with its output in the sm_90 int4 GEMM's dot order (X_DOT_ORDER)",
    autotune_keys=act_and_mul.autotune_keys)

HOPPER_WQ_KERNELS = [fused_moe_gemm_wq_hopper, moe_dot_order_copy, act_and_mul_dot_order]
