"""placeholder"""
FUSED = {64: {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 2, "FUSE_DQ": True, "num_warps": 8},
         128: {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 2, "FUSE_DQ": True, "num_warps": 8}}
VARIANTS = {
    "fused": FUSED,
    "split": {d: dict(c, FUSE_DQ=False) for d, c in FUSED.items()},
}
