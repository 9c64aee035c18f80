"""The installed package: layout, inspect command, and a separate CMake
project that finds it with find_package(aotriton) and links it."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_install_layout(prefix):
    assert (prefix / "lib/libaotriton.a").is_file()
    for h in ("runtime.h", "status.h", "version.h", "moe.h"):
        assert (prefix / "include/aotriton" / h).is_file(), h
    assert (prefix / "lib/cmake/aotriton/aotritonConfig.cmake").is_file()
    assert (prefix / "lib/cmake/aotriton/aotritonConfigVersion.cmake").is_file()
    images = list((prefix / "lib/aotriton.images").rglob("*.aks"))
    assert images and all(re.match(r"sm_\d+", p.relative_to(prefix / "lib/aotriton.images").parts[0]) for p in images)


def test_inspect_install(prefix):
    r = subprocess.run([sys.executable, str(prefix / "lib/aotriton.tools/inspect_images.py"), str(prefix)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "act_and_mul" in r.stdout and "moe_sum" in r.stdout


def _cache_value(build_dir, key):
    for line in (build_dir / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split("=", 1)[1]
    return None


def test_consumer_project(prefix, build_dir, tmp_path):
    args = ["cmake", "-S", str(REPO / "test/consumer"), "-B", str(tmp_path), "-G", "Ninja",
            f"-DCMAKE_PREFIX_PATH={prefix}"]
    for key in ("LIBLZMA_INCLUDE_DIR", "LIBLZMA_LIBRARY"):  # same liblzma as the library was built with
        value = _cache_value(build_dir, key)
        if value:
            args.append(f"-D{key}={value}")
    subprocess.run(args, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(tmp_path)], check=True, capture_output=True)
    r = subprocess.run([str(tmp_path / "consumer")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "silu_and_mul(empty): success" in r.stdout
    assert "input.size(1)" in r.stdout
