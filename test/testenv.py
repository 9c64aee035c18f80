"""Where the build and the install are, and whether a GPU is present.

AOTRITON_BUILD_DIR (default <repo>/build) and AOTRITON_PREFIX (default
<repo>/install) point at what tools/build.sh produced.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(os.environ.get("AOTRITON_BUILD_DIR", REPO / "build"))
PREFIX = Path(os.environ.get("AOTRITON_PREFIX", REPO / "install"))
PY_DIR = PREFIX / "lib" / "python"


def gpu_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False
