"""Flash attention kernel rules (see kernel_rules.py for the vocabulary)."""
from kernel_rules import Arg, AutotuneKey, Kernel, TuningSpace
from tritonsrc.flash.fwd_configs import pick_config

HEAD_DIM_BUCKETS = [16, 32, 64, 128, 256]  # NPOT head dims run padded in the next bucket
SEQLEN_BINS = [128, 512, 1024, 2048, 4096, 8192]


def _fwd_shared_bytes(f, c):
    """Q tile + pipelined K and V tiles, in bytes (what Triton allocates, roughly)."""
    elem = 4 if f["dtype"] == "fp32" else 2
    d = f["BLOCK_DMODEL"]
    return elem * d * (c["BLOCK_M"] + 2 * c["BLOCK_N"] * max(1, c["num_stages"] - 1))


def _shared_limit(arch):
    return 227 * 1024 if arch >= 90 else 163 * 1024


def _fwd_valid(f, arch):
    if f["RETURN_DROPOUT_MASK"] and not f["ENABLE_DROPOUT"]:
        return False
    # Unpadded head dims (multiples of 16) give 16-divisible strides for any
    # dense layout; the unaligned fallback is compiled for padded heads only.
    if not f["ALIGNED16"] and not f["PADDED_HEAD"]:
        return False
    return True


def _fwd_default(f, arch):
    return pick_config(arch, f["BLOCK_DMODEL"] - (1 if f["PADDED_HEAD"] else 0), f["dtype"],
                       f["ENABLE_DROPOUT"], f["RETURN_DROPOUT_MASK"])


attn_fwd = Kernel(
    name="attn_fwd",
    source="tritonsrc/flash/fwd.py",
    function="attn_fwd",
    args=[
        Arg("Q", "*{dtype}:16"), Arg("K", "*{dtype}:16"), Arg("V", "*{dtype}:16"), Arg("O", "*{dtype}:16"),
        Arg("LSE", "*fp32"),
        Arg("cu_seqlens_q", "*i32"), Arg("cu_seqlens_k", "*i32"),
        Arg("philox_seed_ptr", "*i64"), Arg("philox_offset_ptr", "*i64"), Arg("dropout_mask", "*i8"),
        Arg("sm_scale", "fp32"), Arg("dropout_p", "fp32"),
        Arg("stride_qz", "i32:16"), Arg("stride_qh", "i32:16"), Arg("stride_qm", "i32:16"),
        Arg("stride_kz", "i32:16"), Arg("stride_kh", "i32:16"), Arg("stride_kn", "i32:16"),
        Arg("stride_vz", "i32:16"), Arg("stride_vh", "i32:16"), Arg("stride_vn", "i32:16"),
        Arg("stride_oz", "i32:16"), Arg("stride_oh", "i32:16"), Arg("stride_om", "i32:16"),
        Arg("stride_lse_z", "i32"), Arg("stride_lse_h", "i32"),
        Arg("stride_mz", "i32"), Arg("stride_mh", "i32"), Arg("stride_mm", "i32"),
        Arg("num_seqs", "i32"), Arg("num_heads_q", "i32"), Arg("num_heads_k", "i32"),
        Arg("max_seqlen_q", "i32"), Arg("max_seqlen_k", "i32"), Arg("head_dim", "i32"),
    ],
    functional={
        "dtype": ["fp16", "bf16", "fp32"],
        "BLOCK_DMODEL": HEAD_DIM_BUCKETS,
        "PADDED_HEAD": [False, True],
        "CAUSAL_TYPE": [0, 1, 2],
        "IS_VARLEN": [False, True],
        "ENABLE_DROPOUT": [False, True],
        "RETURN_DROPOUT_MASK": [False, True],
    },
    unaligned_variant=True,
    valid=_fwd_valid,
    tuning=TuningSpace(
        params={"BLOCK_M": [64, 128], "BLOCK_N": [32, 64, 128], "num_warps": [4, 8], "num_stages": [2, 3, 4]},
        default=_fwd_default,
        prune=lambda f, c, arch: _fwd_shared_bytes(f, c) <= _shared_limit(arch),
    ),
    grid=("cdiv(max_seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"),
    autotune_keys=[AutotuneKey("max_seqlen_q", SEQLEN_BINS), AutotuneKey("max_seqlen_k", SEQLEN_BINS)],
    doc="flash attention forward: O = softmax(scale * Q K^T) V, LSE",
)

FLASH_KERNELS = [attn_fwd]
# ci: fp16, head-dim bucket 64 (exact and padded), every causal kind, batched
# and varlen, dropout on/off.
FLASH_CI = {
    "attn_fwd": lambda f: f["dtype"] == "fp16" and f["BLOCK_DMODEL"] == 64 and not f["RETURN_DROPOUT_MASK"]
    and f["ALIGNED16"],
}
