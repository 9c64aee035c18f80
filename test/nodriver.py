"""Runs a script against the Python binding in a process that has no CUDA
driver (AOTRITON_LIBCUDA points nowhere), for the host-side check tests
(test/cpu/*_checks_nodriver.py). Device pointers there are fake and never
dereferenced: every call either is refused by a check or stops at the
missing driver.

The script starts after PRELUDE, which gives it:
  C                    the pyaotriton module
  view(ptr, shape, dtype, strides=None)  a tensor view tuple (contiguous
                       strides unless given)
  fresh(shape, dtype)  a view at a new fake address, 4 KiB aligned and
                       disjoint from every other fresh() buffer
  outcome(fn)          "ok" (or "ok <result>"), or "<Error>: <message>" for
                       the ValueError / RuntimeError the call raised
"""
import os
import subprocess
import sys

NO_DRIVER = {**os.environ, "AOTRITON_LIBCUDA": "/nonexistent/libcuda.so.1"}

PRELUDE = r"""
import pyaotriton as C

_next_ptr = [1 << 32]


def view(ptr, shape, dtype, strides=None):
    if strides is None:
        strides, s = [], 1
        for n in reversed(shape):
            strides.insert(0, s)
            s *= n
    return (ptr, tuple(shape), tuple(strides), dtype)


def fresh(shape, dtype):
    numel = 1
    for n in shape:
        numel *= n
    ptr = _next_ptr[0]
    _next_ptr[0] += (numel * 8 + (1 << 20)) // 4096 * 4096 + 4096  # room for 8-byte elements, then a gap
    return view(ptr, shape, dtype)


def outcome(fn):
    try:
        r = fn()
    except (ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return "ok" if r is None else f"ok {r}"
"""


def run_without_driver(prefix, script: str) -> str:
    """stdout of PRELUDE + script, run against the binding installed at prefix."""
    env = {**NO_DRIVER, "PYTHONPATH": str(prefix / "lib/python")}
    r = subprocess.run([sys.executable, "-c", PRELUDE + script], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def cases_without_driver(prefix, script: str) -> dict[str, str]:
    """The script's `name|outcome` lines as a dict."""
    return dict(line.split("|", 1) for line in run_without_driver(prefix, script).splitlines())
