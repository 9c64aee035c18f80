"""The image store reader's fuzz target (test/fuzz) under ASan+UBSan, for a
bounded number of inputs (tools/fuzz_store.sh runs it for as long as asked; see
docs/reliability.md). Uses clang's libFuzzer when available, else the
deterministic driver built with g++."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("AOTRITON_FUZZ_RUNS", "50000"))


def _sanitizer_compiler():
    """Why the fuzz target cannot be built here, or None."""
    for cxx in ("g++", "clang++", "clang++-14", "clang++-16"):
        path = shutil.which(cxx)
        if not path:
            continue
        p = subprocess.run([path, "-x", "c++", "-fsanitize=address,undefined", "-", "-llzma", "-o", os.devnull],
                           input="#include <lzma.h>\nint main() { return int(lzma_crc32(nullptr, 0, 0)); }\n",
                           capture_output=True, text=True)
        if p.returncode == 0:
            return None
    return "no C++ compiler here can build with -fsanitize=address,undefined and liblzma"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    why = _sanitizer_compiler()
    if why:
        pytest.skip(why)
    return tmp_path_factory.mktemp("fuzz")


def _fuzz(fuzz_dir, *args, **env):
    e = dict(os.environ, FUZZ_DIR=str(fuzz_dir), PYTHON=sys.executable, **env)
    return subprocess.run([str(REPO / "tools" / "fuzz_store.sh"), *args], capture_output=True, text=True, env=e,
                          timeout=900)


def test_store_reader_fuzz(fuzz_dir):
    p = _fuzz(fuzz_dir, f"-runs={RUNS}")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "Sanitizer" not in out and "runtime error" not in out, out[-6000:]
    engine = re.search(r"store fuzzer: engine (\w+)", out).group(1)
    if engine == "libfuzzer":
        assert f"Done {RUNS} runs" in out, out[-3000:]
    else:
        m = re.search(r"store_fuzz_driver: (\d+) runs .* (\d+) accepted mutants kept", out)
        assert m and int(m.group(1)) == RUNS, out[-3000:]
        # Both outcomes are exercised: mutants the reader accepts and rejects.
        counts = dict(re.findall(r"^  (\S.*?)\s+(\d+)$", out, re.M))
        assert int(counts.get("success", 0)) > RUNS // 50 and int(counts.get("corrupt kernel image", 0)) > RUNS // 2, \
            counts
    print(out[-1500:])


def test_fuzz_target_catches_an_overread(fuzz_dir):
    # STORE_FUZZ_SELFTEST makes the target read one byte past each cubin: the
    # sanitizer must stop the run, or the fuzz test above could not fail.
    p = _fuzz(fuzz_dir, "-runs=50", STORE_FUZZ_SELFTEST="1")
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "heap-buffer-overflow" in out, out[-3000:]
