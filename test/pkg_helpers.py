"""Helpers for the packaging tests (release tarball, wheel, CMake consumers):
run a command with its output kept for the failure message, and the CMake
arguments that make a new project use the same liblzma as the main build."""
import subprocess

from testenv import BUILD_DIR


def run(args, **kw):
    """subprocess.run that fails the test with the command's output."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def cache_value(key, build_dir=BUILD_DIR):
    for line in (build_dir / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split("=", 1)[1]
    return None


def lzma_args(build_dir=BUILD_DIR):
    """-D arguments for the liblzma the main build found (the GPU machine carries its own)."""
    out = []
    for key in ("LIBLZMA_INCLUDE_DIR", "LIBLZMA_LIBRARY"):
        value = cache_value(key, build_dir)
        if value:
            out.append(f"-D{key}={value}")
    return out


def triton_cache(build_dir=BUILD_DIR):
    """The main build's Triton cache, to reuse (its cubins are location-independent)."""
    return cache_value("AOTRITON_TRITON_CACHE_DIR", build_dir) or str(build_dir / "kernels" / "triton-cache")
