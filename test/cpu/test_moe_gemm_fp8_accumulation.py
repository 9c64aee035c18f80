"""The per-tensor fp8 grouped GEMM must not accumulate over the whole K in
sm_90's reduced-precision fp8 wgmma accumulator (about 14 bits: the error
grows with K; it made fused_experts miss 3e-2 at K=512). Triton's sm_90
default never promotes (max_num_imprecise_acc = 2**30); the kernel asks for a
promotion to fp32 once per K tile. Checked on the compiled sm_90 TTGIR, so no
GPU is needed; test/gpu/test_moe_fused_gpu.py measures the error itself."""
import re

import pytest

from python import compile_kernel, rules
from tritonsrc.moe import configs as C

RULE = next(k for k in rules.KERNELS if k.name == "fused_moe_gemm")


@pytest.mark.parametrize("block_m,block_k", [(64, 128), (128, 64)])
def test_fp8_tensor_dot_promotes_every_k_tile(block_m, block_k):
    f = dict(ab_dtype="fp8e4nv", c_dtype="bf16", QUANT=C.QUANT_FP8_TENSOR, MUL_ROUTED_WEIGHT=True, ALIGNED=True,
             BLOCK_SIZE_M=block_m, SPLIT_K=1, ALIGNED16=True)
    cfg = dict(BLOCK_SIZE_N=128, BLOCK_SIZE_K=block_k, GROUP_SIZE_M=8, num_warps=4, num_stages=3)
    assert RULE.valid(f, 90)
    ttgir = compile_kernel.compile_one(RULE, f, cfg, 90).asm["ttgir"]
    dots = [line for line in ttgir.splitlines() if "warp_group_dot " in line and "f8E4M3" in line]
    assert dots, "expected an fp8 wgmma dot on sm_90"
    for line in dots:
        limit = int(re.search(r"maxNumImpreciseAcc = (\d+)", line).group(1))
        assert limit <= block_k, f"fp8 dot accumulates {limit} products before promoting: {line.strip()[:120]}"
