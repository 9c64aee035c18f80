"""Default and candidate tuning configs of the flash forward kernel, shared by
the AOT rules (python/rules_flash.py) and the JIT launcher. Plain Python: no
torch, no triton, so the generator can import it cheaply.
"""

# Default tuning (BLOCK_M, BLOCK_N, num_warps, num_stages) per arch and head-dim
# bucket. Each entry compiles for its arch within the shared-memory limit and
# without register spills in the key loops, for every functional it is picked
# for (checked with triton.compile for sm_90 and sm_80).
_FP16 = {  # fp16 and bf16
    90: {16: (128, 128, 8, 3), 32: (128, 128, 8, 3), 64: (128, 128, 8, 3),
         128: (128, 128, 8, 3), 256: (128, 64, 8, 2)},
    80: {16: (128, 128, 8, 3), 32: (128, 128, 8, 3), 64: (128, 128, 8, 3),
         128: (128, 32, 8, 3), 256: (64, 64, 8, 2)},
}
# The d mask of padded heads costs registers: smaller key tiles there.
_FP16_PADDED = {90: {128: (128, 64, 8, 3), 256: (128, 32, 8, 2)}, 80: {256: (64, 32, 8, 2)}}
# Philox needs registers too.
_DROPOUT = {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (128, 64, 8, 2),
            128: (128, 64, 8, 2), 256: (64, 32, 8, 2)}
# fp32 tiles take twice the shared memory (dots run as tf32 on GPUs).
_FP32 = {16: (64, 64, 4, 2), 32: (64, 64, 4, 2), 64: (128, 64, 8, 2),
         128: (128, 32, 8, 2), 256: (32, 32, 4, 1)}
_FP32_DROPOUT = {16: (64, 32, 4, 2), 32: (64, 32, 4, 2), 64: (64, 32, 4, 2),
                 128: (64, 32, 8, 2), 256: (32, 32, 4, 1)}

# Candidates for a GPU sweep (fp16/bf16), per arch and bucket: each compiles
# within the arch's shared memory, without spills in the key loops for the
# plain, causal and padded+causal+varlen functionals.
_SMALL_D = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (64, 128, 4, 3),
            (128, 128, 8, 4)]
TUNING_CANDIDATES = {
    90: {16: _SMALL_D, 32: _SMALL_D,
         64: [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 4),
              (64, 128, 4, 3)],
         128: [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3),
               (128, 32, 8, 3), (64, 64, 8, 3)],
         256: [(128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 8, 2), (64, 32, 8, 2), (128, 64, 8, 1),
               (64, 64, 8, 1)]},
    80: {16: _SMALL_D, 32: _SMALL_D[:4] + _SMALL_D[5:],
         64: [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 4)],
         128: [(128, 32, 8, 3), (64, 64, 8, 3), (64, 64, 4, 3)],
         256: [(64, 64, 8, 2), (64, 32, 8, 2), (64, 64, 8, 1)]},
}


def head_dim_bucket(head_dim):
    if head_dim < 1 or head_dim > 256:
        raise ValueError(f"head_dim {head_dim} not in [1, 256]")
    return max(16, 1 << (head_dim - 1).bit_length())


def pick_config(arch, head_dim, dtype_name, dropout=False):
    """Default config dict. arch: 80, 90 (others use the nearest lower table);
    dtype_name: "fp16", "bf16" or "fp32"."""
    arch = 90 if arch >= 90 else 80
    bucket = head_dim_bucket(head_dim)
    if dtype_name == "fp32":
        cfg = _FP32_DROPOUT[bucket] if dropout else _FP32[bucket]
    elif dropout:
        cfg = _DROPOUT[bucket]
    elif bucket != head_dim and bucket in _FP16_PADDED[arch]:
        cfg = _FP16_PADDED[arch][bucket]
    else:
        cfg = _FP16[arch][bucket]
    bm, bn, w, st = cfg
    return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": st}


# The standalone keep-mask kernel (dropout_mask.py): Philox + an int8 store
# per element, no dots; one config for every arch.
DROPOUT_MASK_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 1}
