"""Default and candidate tuning configs of the flash backward kernels, shared
by the AOT rules (python/rules_flash.py) and the JIT launcher. Plain Python.
"""

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per arch, element size, kernel
# and head-dim bucket, picked from compile checks (no register spills in any
# functional variant, dropout included, shared memory fits, wgmma on sm_90)
# except where noted; a GPU sweep over CANDIDATE_CONFIGS should replace them.
# dkdv: BLOCK_N keys per program, BLOCK_M rows per step; dq: the reverse.
# fp16/bf16 with dropout: DROPOUT_SHRINK halves the inner tile (Philox
# registers). fp32 rows already hold with dropout; fp32 D=256 spills.
DEFAULT_CONFIGS = {
    (90, "16bit"): {
        # D=256 dkdv spills 32-112 bytes; (16, 32, 4, 2) does not (mma.sync).
        "dkdv": {16: (64, 128, 8, 2), 32: (64, 128, 8, 2), 64: (64, 128, 8, 2),
                 128: (32, 128, 8, 2), 256: (16, 64, 8, 2)},
        "dq": {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (128, 64, 8, 2),
               128: (128, 64, 8, 2), 256: (64, 32, 8, 2)},
    },
    (80, "16bit"): {
        "dkdv": {16: (64, 128, 8, 2), 32: (64, 128, 8, 2), 64: (32, 128, 8, 2),
                 128: (32, 64, 8, 2), 256: (16, 64, 8, 2)},
        "dq": {16: (128, 64, 8, 3), 32: (128, 64, 8, 2), 64: (128, 64, 8, 2),
               128: (128, 32, 8, 2), 256: (64, 32, 8, 2)},
    },
    (90, "fp32"): {
        "dkdv": {16: (64, 128, 8, 2), 32: (64, 128, 8, 2), 64: (16, 128, 8, 2),
                 128: (16, 32, 4, 2), 256: (16, 32, 4, 2)},
        "dq": {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (128, 32, 8, 2),
               128: (128, 32, 8, 2), 256: (32, 32, 4, 2)},
    },
    (80, "fp32"): {
        "dkdv": {16: (64, 128, 8, 2), 32: (32, 128, 8, 2), 64: (16, 128, 8, 2),
                 128: (16, 64, 8, 2), 256: (16, 32, 4, 2)},
        "dq": {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (128, 32, 8, 2),
               128: (64, 32, 8, 2), 256: (32, 32, 4, 2)},
    },
}
DROPOUT_SHRINK = {"dkdv": "BLOCK_M", "dq": "BLOCK_N"}

# fp16/bf16 sweep list per kernel and bucket (same list for sm_90 and sm_80:
# every entry compiles for both and fits their shared memory).
_KV_SMALL = [(64, 128, 8, 2), (32, 128, 8, 2), (64, 128, 8, 3), (32, 128, 4, 2),
             (64, 64, 4, 2), (32, 64, 4, 3), (128, 128, 8, 2), (64, 128, 4, 2)]
_DQ_SMALL = [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 4, 2), (64, 64, 4, 2),
             (128, 128, 8, 2), (64, 128, 4, 2), (64, 32, 4, 3), (128, 32, 8, 3)]
CANDIDATE_CONFIGS = {
    "dkdv": {
        16: _KV_SMALL, 32: _KV_SMALL,
        64: [(64, 128, 8, 2), (32, 128, 8, 2), (16, 128, 8, 2), (64, 64, 4, 2),
             (32, 64, 4, 3), (32, 64, 8, 2), (64, 64, 8, 2), (32, 128, 8, 3)],
        128: [(32, 128, 8, 2), (64, 128, 8, 2), (16, 128, 8, 2), (32, 64, 8, 2),
              (64, 64, 8, 2), (16, 64, 4, 2), (32, 128, 8, 1)],
        256: [(16, 64, 8, 2), (16, 32, 4, 2), (32, 64, 8, 2), (16, 64, 8, 3),
              (32, 32, 4, 2)],
    },
    "dq": {
        16: _DQ_SMALL, 32: _DQ_SMALL, 64: _DQ_SMALL,
        128: [(128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 8, 2), (64, 32, 4, 2),
              (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 2)],
        256: [(64, 32, 8, 2), (64, 64, 8, 2), (32, 32, 4, 2), (64, 16, 8, 2),
              (64, 32, 8, 3), (32, 64, 8, 2)],
    },
}
PRE_CONFIG = {"BLOCK_M": 128, "num_warps": 4, "num_stages": 1}


def pick_config(arch, bucket, dtype_name, kernel, dropout=False):
    """{BLOCK_M, BLOCK_N, num_warps, num_stages} for kernel "dkdv" or "dq";
    dtype_name "fp16", "bf16" or "fp32"."""
    arch = 90 if arch >= 90 else 80
    kind = "fp32" if dtype_name == "fp32" else "16bit"
    bm, bn, w, s = DEFAULT_CONFIGS[(arch, kind)][kernel][bucket]
    c = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}
    if dropout and kind == "16bit":
        key = DROPOUT_SHRINK[kernel]
        c[key] = max(16, c[key] // 2)
    return c


def pre_config(bucket):
    cfg = dict(PRE_CONFIG)
    if bucket == 256:
        cfg["BLOCK_M"] = 64
    return cfg
