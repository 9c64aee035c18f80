"""PTX fallback on a GPU newer than every built arch: an install built for
sm_80 only with -DAOTRITON_PTX_FALLBACK=ON (tools/gpu_run.sh makes
install80ptx, minimal profile) runs silu_and_mul on the sm_90 GPU by JIT-ing
the sm_80 PTX kept in its images, with the right result.

    AOTRITON_PTX_PREFIX=$PWD/install80ptx pytest test/gpu/test_ptx_fallback_gpu.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testenv import gpu_available

PREFIX = os.environ.get("AOTRITON_PTX_PREFIX")

SCRIPT = r"""
import json
import aotriton, torch
info = aotriton.build_info()
torch.manual_seed(0)
loads0 = aotriton._C.module_load_count()
results = []
for m, n in ((64, 256), (37, 1000)):
    x = torch.randn(m, 2 * n, device="cuda", dtype=torch.float16)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)  # poisoned
    aotriton.silu_and_mul(x, out)
    xf = x.double()
    ref = torch.nn.functional.silu(xf[:, :n]) * xf[:, n:]
    results.append(((out.double() - ref).abs() / (ref.abs() + 1e-3)).max().item())
print(json.dumps({"archs": info["archs"], "ptx_fallback": info["ptx_fallback"],
                  "capability": list(torch.cuda.get_device_capability()),
                  "loads": aotriton._C.module_load_count() - loads0, "max_rel_err": results}))
"""


@pytest.mark.skipif(not gpu_available(), reason="needs a GPU")
def test_sm80_ptx_runs_on_newer_gpu():
    if not PREFIX:
        pytest.skip("set AOTRITON_PTX_PREFIX to an sm_80-only install built with -DAOTRITON_PTX_FALLBACK=ON")
    env = {**os.environ, "PYTHONPATH": str(Path(PREFIX) / "lib/python")}
    env.pop("AOTRITON_IMAGE_DIR", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["archs"] == [80] and out["ptx_fallback"] is True
    major, minor = out["capability"]
    assert major * 10 + minor > 80, "needs a GPU newer than sm_80 to exercise the fallback"
    assert out["loads"] >= 1  # the PTX module was loaded (JIT by the driver)
    assert all(e < 2e-3 for e in out["max_rel_err"]), out  # fp16 output rounding
