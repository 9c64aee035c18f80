"""The block size fused_experts picks (C++ moe_gemm_block_size, through the
Python binding) agrees with tritonsrc/moe/configs.block_size_m, with and
without the layer (topk, num_experts), on a machine without a GPU: the tuner
and the benches tune and time the functional the operator runs."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NO_DRIVER = {**os.environ, "AOTRITON_LIBCUDA": "/nonexistent/libcuda.so.1"}

PROBE = """
import aotriton
from tritonsrc.moe import configs as C
bad = []
for M in (0, 1, 16, 17, 64, 65, 128, 300, 508, 512, 513, 4096, 10 ** 6):
    for aligned in (True, False):
        if aotriton.moe_gemm_block_size(M, aligned) != C.block_size_m(M, aligned):
            bad.append((M, aligned))
        for topk, E in ((2, 8), (8, 256), (1, 1), (6, 64), (4, 16)):
            got = aotriton.moe_gemm_block_size(M, aligned, topk=topk, num_experts=E)
            if got != C.block_size_m(M, aligned, topk=topk, num_experts=E):
                bad.append((M, aligned, topk, E, got))
try:
    aotriton.moe_gemm_block_size(512, topk=2)
    bad.append("topk without num_experts accepted")
except ValueError:
    pass
print("mismatches", bad)
print("mixtral512", aotriton.moe_gemm_block_size(512, topk=2, num_experts=8))
"""


def test_binding_block_size_matches_configs(prefix):
    env = {**NO_DRIVER, "PYTHONPATH": os.pathsep.join([str(prefix / "lib/python"), str(REPO)])}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "mismatches []" in r.stdout, r.stdout
    assert "mixtral512 128" in r.stdout, r.stdout
