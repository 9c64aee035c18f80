"""What the configure step needs to know about the kernel compiler, as CMake
`set()` lines: the Triton version (checked against the one aotriton pins),
the CUDA release of Triton's bundled ptxas (it names release tarballs) and
the cuda.h Triton ships (so the CUDA toolkit is optional).

    python python/build_env.py --arch 90      # prints set(...) lines, or an error and exit 1
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REQUIRED_TRITON = "3.6.0"


def triton_facts(arch: int) -> dict:
    try:
        import triton
    except ImportError as e:
        raise SystemExit(f"aotriton needs triton=={REQUIRED_TRITON} for {sys.executable} "
                         f"(pip install triton=={REQUIRED_TRITON}): {e}")
    if triton.__version__ != REQUIRED_TRITON:
        raise SystemExit(f"aotriton needs triton=={REQUIRED_TRITON}, but {sys.executable} has triton "
                         f"{triton.__version__} (pip install triton=={REQUIRED_TRITON})")
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(arch).path
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    if not m:
        raise SystemExit(f"cannot read the CUDA release of Triton's ptxas {ptxas}: {out!r}")
    include = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
    return {
        "AOTRITON_TRITON_VERSION": triton.__version__,
        "AOTRITON_CUDA_VERSION": m.group(1),
        "AOTRITON_PTXAS": ptxas,
        "AOTRITON_TRITON_CUDA_INCLUDE_DIR": str(include) if (include / "cuda.h").is_file() else "",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="newest target arch (picks Triton's ptxas)")
    args = ap.parse_args(argv)
    for key, value in triton_facts(args.arch).items():
        print(f'set({key} "{value}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
