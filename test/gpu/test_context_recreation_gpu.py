"""A CUDA context destroyed and created again (the driver may hand the same
CUcontext handle back): launches in the new context must load their module
again and compute the right result. Driven with the driver API through ctypes
and the pyaotriton extension (no torch, which would hold the primary context),
in a subprocess: a fresh library state."""
import os
import subprocess
import sys

from testenv import PREFIX

SCRIPT = r"""
import ctypes as C
import numpy as np
import pyaotriton as A

cu = C.CDLL("libcuda.so.1")
u64 = C.c_uint64
cu.cuCtxCreate_v2.argtypes = [C.POINTER(C.c_void_p), C.c_uint, C.c_int]
cu.cuCtxDestroy_v2.argtypes = [C.c_void_p]
cu.cuMemAlloc_v2.argtypes = [C.POINTER(u64), C.c_size_t]
cu.cuMemFree_v2.argtypes = [u64]
cu.cuMemcpyHtoD_v2.argtypes = [u64, C.c_void_p, C.c_size_t]
cu.cuMemcpyDtoH_v2.argtypes = [C.c_void_p, u64, C.c_size_t]


def ck(r, what):
    if r != 0:
        raise SystemExit(f"{what} failed: CUresult {r}")


ck(cu.cuInit(0), "cuInit")
dev = C.c_int()
ck(cu.cuDeviceGet(C.byref(dev), 0), "cuDeviceGet")
handles = []
M, N = 64, 256
for round_ in range(4):
    ctx = C.c_void_p()
    ck(cu.cuCtxCreate_v2(C.byref(ctx), 0, dev), "cuCtxCreate")  # becomes current
    handles.append(ctx.value)
    rng = np.random.default_rng(round_)
    x = rng.standard_normal((M, 2 * N)).astype(np.float32)
    out = np.full((M, N), np.nan, np.float32)  # poison: unwritten rows show
    d_in, d_out = u64(), u64()
    ck(cu.cuMemAlloc_v2(C.byref(d_in), x.nbytes), "cuMemAlloc")
    ck(cu.cuMemAlloc_v2(C.byref(d_out), out.nbytes), "cuMemAlloc")
    ck(cu.cuMemcpyHtoD_v2(d_in, x.ctypes.data, x.nbytes), "cuMemcpyHtoD")
    ck(cu.cuMemcpyHtoD_v2(d_out, out.ctypes.data, out.nbytes), "cuMemcpyHtoD")
    A.act_and_mul((d_out.value, (M, N), (N, 1), A.DTYPE_FP32), (d_in.value, (M, 2 * N), (2 * N, 1), A.DTYPE_FP32),
                  0, 0, None)
    ck(cu.cuCtxSynchronize(), "cuCtxSynchronize")
    ck(cu.cuMemcpyDtoH_v2(out.ctypes.data, d_out, out.nbytes), "cuMemcpyDtoH")
    g, u = x[:, :N].astype(np.float64), x[:, N:].astype(np.float64)
    ref = g / (1.0 + np.exp(-g)) * u
    err = float(np.max(np.abs(out - ref)))
    assert np.isfinite(out).all() and err < 1e-5, (round_, err)
    cu.cuMemFree_v2(d_in)
    cu.cuMemFree_v2(d_out)
    ck(cu.cuCtxDestroy_v2(ctx), "cuCtxDestroy")
print("OK", "handle reused" if len(set(handles)) < len(handles) else "handles all distinct", A.module_load_count())
"""


def test_recreated_context_reloads_and_computes():
    env = {**os.environ, "PYTHONPATH": str(PREFIX / "lib/python")}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    # one module per context: 4 contexts, 4 loads (a stale cached module would fail instead)
    assert r.stdout.split()[-1] == "4", r.stdout
