"""The Gluon Hopper backward (tritonsrc/flash/bwd_hopper.py) compiles for
sm_90 without a GPU, without register spills (the warp-specialized default
partition has 240 registers), within the shared-memory limit and with its
async wgmma left overlapped by ptxas, in the forms the GPU experiment runs (the dQ-by-atomics
kernel moves dQ by fp32 REDs, the split form has none). Its numerics run on
the GPU: bench/experiments/run_flash_bwd_experiment.sh."""

import pytest


pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from bench.experiments.flash_bwd_hopper import VARIANTS  # noqa: E402
from bench.experiments.flash_bwd_hopper_compile import SMEM_LIMIT, inspect  # noqa: E402

# (variant, dtype, head dim, CAUSAL_TYPE): the timed forms at both head dims.
CASES = [("fused", "bf16", 128, 1), ("fused", "fp16", 128, 2), ("fused", "fp16", 64, 2), ("split", "bf16", 128, 0),
         ("serial", "bf16", 128, 1), ("fused_1wg", "bf16", 64, 1)]


@pytest.mark.parametrize("variant,dtype,head_dim,causal", CASES)
def test_compiles_without_spills(variant, dtype, head_dim, causal):
    config = VARIANTS[variant][head_dim]
    r = inspect(dtype, head_dim, causal, config)
    assert r["spill_bytes"] == 0, r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["tma_loads"] > 0 and r["hgmma"] > 0, r
    assert not r["wgmma_serialized"], r
    assert (r["atomics"] > 0) == config["FUSE_DQ"], r
