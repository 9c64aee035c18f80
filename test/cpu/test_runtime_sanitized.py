"""The runtime's CPU tests (stand-in driver, no driver, out of memory) again,
with the runtime and the check programs built with ASan+UBSan by
tools/sanitize_runtime.sh: any memory error or undefined behaviour fails."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_store_fuzz import _sanitizer_compiler

REPO = Path(__file__).resolve().parents[2]


def test_runtime_checks_under_asan_ubsan(build_dir, tmp_path):
    why = _sanitizer_compiler()
    if why:
        pytest.skip(why)
    env = {**os.environ, "PYTHON": sys.executable, "BUILD_DIR": str(build_dir), "SAN_DIR": str(tmp_path / "san")}
    r = subprocess.run([str(REPO / "tools" / "sanitize_runtime.sh"), "-p", "no:cacheprovider"], capture_output=True,
                       text=True, env=env, timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert " passed" in out and " failed" not in out and "Sanitizer" not in out, out[-3000:]
