"""Shared test setup: where the build and the install are, GPU detection.

AOTRITON_BUILD_DIR (default <repo>/build) and AOTRITON_PREFIX (default
<repo>/install) point at what `tools/build.sh` produced.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(os.environ.get("AOTRITON_BUILD_DIR", REPO / "build"))
PREFIX = Path(os.environ.get("AOTRITON_PREFIX", REPO / "install"))
PY_DIR = PREFIX / "lib" / "python"

for p in (str(PY_DIR), str(REPO / "python"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)


def gpu_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


requires_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="session")
def build_dir() -> Path:
    if not (BUILD_DIR / "kernels" / "manifest.json").exists():
        pytest.fail(f"no aotriton build at {BUILD_DIR}: run tools/build.sh first (or set AOTRITON_BUILD_DIR)")
    return BUILD_DIR


@pytest.fixture(scope="session")
def prefix() -> Path:
    if not (PREFIX / "lib" / "libaotriton.a").exists():
        pytest.fail(f"no aotriton install at {PREFIX}: run tools/build.sh first (or set AOTRITON_PREFIX)")
    return PREFIX
