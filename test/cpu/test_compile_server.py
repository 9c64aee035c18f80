"""The build's compile edge (python/compile_client.py through python/compile_server.py)
writes the same cubin and metadata as compile_kernel.py run on its own, reports a
compile error with the direct path's message and status, and falls back to the
direct path when told to (AOTRITON_COMPILE_SERVER=0)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[2]
EDGE = ["--kernel", "moe_sum", "--functional", '{"dtype":"fp16"}',
        "--config", '{"BLOCK":1024,"BLOCK_R":8,"num_stages":1,"num_warps":4}', "--arch", "90"]
TIMING = ("compile_seconds", "compile_cpu_seconds")


def run(script, args, tmp, cache, server="1", flags=()):
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp / cache), AOTRITON_COMPILE_SERVER=server,
               AOTRITON_COMPILE_SERVER_IDLE_S="5")
    return subprocess.run([sys.executable, *flags, str(REPO / "python" / script), *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=300)


def outputs(cubin: Path):
    meta = json.loads(cubin.with_suffix(".json").read_text())
    return cubin.read_bytes(), {k: v for k, v in meta.items() if k not in TIMING}


@pytest.mark.parametrize("server", ["1", "0"])
def test_client_writes_what_compile_kernel_writes(tmp_path, server):
    direct = run("compile_kernel.py", EDGE + ["--out", str(tmp_path / "a/x.cubin")], tmp_path, "cache_a")
    assert direct.returncode == 0, direct.stderr
    # Twice through the client: the first may start the server, the second is served by it.
    for name in ("b", "c"):
        r = run("compile_client.py", EDGE + ["--out", str(tmp_path / name / "x.cubin")], tmp_path, f"cache_{name}",
                server=server, flags=("-S",))
        assert r.returncode == 0, r.stderr
        assert outputs(tmp_path / name / "x.cubin") == outputs(tmp_path / "a/x.cubin")
    assert (tmp_path / "cache_c").is_dir(), "the request's TRITON_CACHE_DIR is the one the compile used"


def test_client_reports_a_compile_error_like_the_direct_edge(tmp_path):
    bad = ["--kernel", "moe_sum", "--functional", '{"dtype":"fp16"}',
           "--config", '{"BLOCK":1000,"BLOCK_R":8,"num_stages":1,"num_warps":4}', "--arch", "90", "--out", str(tmp_path / "y.cubin")]
    r = run("compile_client.py", bad, tmp_path, "cache", flags=("-S",))
    assert r.returncode == 1
    assert "aotriton compile FAILED: kernel moe_sum" in r.stderr and "power of 2" in r.stderr
    assert not (tmp_path / "y.cubin").exists()
