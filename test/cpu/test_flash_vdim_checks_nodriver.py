"""attn_fwd / attn_bwd (batched and varlen) with a V head dim other than the
Q/K one, through the Python binding on a machine without a CUDA driver (fake,
non-overlapping device pointers): unsupported pairs and mis-shaped tensors
are refused with a message naming them, supported pairs reach the _vdim
kernels (BLOCK_DV)."""
import json
import os
import subprocess
import sys

NO_DRIVER = {**os.environ, "AOTRITON_LIBCUDA": "/nonexistent/libcuda.so.1"}

SCRIPT = r"""
import json
import pyaotriton as C

_next = [1 << 32]


def t(shape, dtype=C.DTYPE_FP16, size=2):
    strides, s = [], 1
    for n in reversed(shape):
        strides.insert(0, s)
        s *= n
    ptr = _next[0]
    _next[0] += (s * size + (1 << 20)) // 4096 * 4096 + 4096  # disjoint, 4 KiB aligned
    return (ptr, tuple(shape), tuple(strides), dtype)


def outcome(fn):
    try:
        fn()
        return "ok"
    except (ValueError, RuntimeError) as e:
        return type(e).__name__ + ": " + str(e)


def fwd(d, dv, dtype=C.DTYPE_FP16, out_d=None, dropout=0.0, window=-1, B=2, S=64, hq=4, hk=2):
    size = 4 if dtype == C.DTYPE_FP32 else 2
    q, k, v = t((B, S, hq, d), dtype, size), t((B, S, hk, d), dtype, size), t((B, S, hk, dv), dtype, size)
    out = t((B, S, hq, dv if out_d is None else out_d), dtype, size)
    seed = t((1,), C.DTYPE_INT64, 8)[0] if dropout else 0
    return outcome(lambda: C.attn_fwd(q, k, v, out, t((B, hq, S), C.DTYPE_FP32, 4), 0.1, 2, dropout, seed, seed,
                                      None, 0, window_left=window))


def fwd_varlen(d, dv, out_d=None):
    q, k, v = t((100, 4, d)), t((90, 2, d)), t((90, 2, dv))
    out = t((100, 4, dv if out_d is None else out_d))
    return outcome(lambda: C.attn_fwd_varlen(q, k, v, out, t((4, 100), C.DTYPE_FP32, 4), t((3,), C.DTYPE_INT32, 4)[0],
                                             t((3,), C.DTYPE_INT32, 4)[0], 2, 60, 50, 0.1, 0, 0.0, 0, 0, None, 0))


def bwd(d, dv, dout_d=None, dv_d=None, varlen=False):
    if varlen:
        shp_q, shp_k, stats = (100, 4), (90, 2), (4, 100)
    else:
        shp_q, shp_k, stats = (2, 64, 4), (2, 64, 2), (2, 4, 64)
    q, k, v = t(shp_q + (d,)), t(shp_k + (d,)), t(shp_k + (dv,))
    out, dout = t(shp_q + (dv,)), t(shp_q + (dv if dout_d is None else dout_d,))
    lse, delta = t(stats, C.DTYPE_FP32, 4), t(stats, C.DTYPE_FP32, 4)
    dq, dk, dvt = t(shp_q + (d,)), t(shp_k + (d,)), t(shp_k + (dv if dv_d is None else dv_d,))
    if varlen:
        cu = t((3,), C.DTYPE_INT32, 4)[0]
        return outcome(lambda: C.attn_bwd_varlen(q, k, v, out, dout, lse, dq, dk, dvt, delta, cu, cu, 2, 60, 50, 0.1,
                                                 2, 0.0, 0, 0, 0))
    return outcome(lambda: C.attn_bwd(q, k, v, out, dout, lse, dq, dk, dvt, delta, 0.1, 2, 0.0, 0, 0, 0))


print(json.dumps({
    "fwd_192_128": fwd(192, 128), "fwd_128_64": fwd(128, 64), "fwd_256_128": fwd(256, 128),
    "fwd_varlen_192_128": fwd_varlen(192, 128),
    "fwd_192_96": fwd(192, 96), "fwd_192_64": fwd(192, 64), "fwd_96_64": fwd(96, 64), "fwd_130_128": fwd(130, 128),
    "fwd_64_128": fwd(64, 128),
    "fwd_fp32": fwd(192, 128, C.DTYPE_FP32), "fwd_dropout": fwd(192, 128, dropout=0.1),
    "fwd_window": fwd(192, 128, window=16),
    "fwd_out_q_dim": fwd(192, 128, out_d=192), "fwd_varlen_out_q_dim": fwd_varlen(192, 128, out_d=192),
    "bwd_192_128": bwd(192, 128), "bwd_varlen_128_64": bwd(128, 64, varlen=True),
    "bwd_192_96": bwd(192, 96), "bwd_varlen_192_96": bwd(192, 96, varlen=True),
    "bwd_dout_q_dim": bwd(192, 128, dout_d=192), "bwd_dv_q_dim": bwd(192, 128, dv_d=192),
}))
"""

PAIRS = "supported: q/k head dim 128 with v head dim 64; q/k head dim 129..256 (a multiple of 8) with v head dim 128"


def _results(prefix):
    env = {**NO_DRIVER, "PYTHONPATH": str(prefix / "lib/python")}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _profile(build_dir):
    return json.loads((build_dir / "kernels" / "manifest.json").read_text())["profile"]


def test_unsupported_pairs_name_the_supported_ones(prefix):
    out = _results(prefix)
    for case, what in (("fwd_192_96", "v head dim 96 with q/k head dim 192"),
                       ("fwd_192_64", "v head dim 64 with q/k head dim 192"),
                       ("fwd_96_64", "v head dim 64 with q/k head dim 96"),
                       ("fwd_130_128", "v head dim 128 with q/k head dim 130"),
                       ("fwd_64_128", "v head dim 128 with q/k head dim 64"),
                       ("fwd_fp32", "with q/k head dim 192 in fp32"),
                       ("fwd_dropout", "with q/k head dim 192 with dropout"),
                       ("fwd_window", "with sliding window, softcap or ALiBi"),
                       ("bwd_192_96", "v head dim 96 with q/k head dim 192"),
                       ("bwd_varlen_192_96", "v head dim 96 with q/k head dim 192")):
        assert out[case].startswith("ValueError: unsupported"), (case, out[case])
        assert what in out[case] and PAIRS in out[case], (case, out[case])
        assert ("attn_bwd" if case.startswith("bwd") else "attn_fwd") in out[case], (case, out[case])


def test_tensors_with_v_head_dim_are_checked(prefix):
    out = _results(prefix)
    assert "out.size(3) = 192 but v.size(3) = 128" in out["fwd_out_q_dim"], out["fwd_out_q_dim"]
    assert "out.size(2) = 192 but v.size(2) = 128" in out["fwd_varlen_out_q_dim"], out["fwd_varlen_out_q_dim"]
    assert "dout.size(3) = 192 but v.size(3) = 128" in out["bwd_dout_q_dim"], out["bwd_dout_q_dim"]
    assert "dv.size(3) = 192 but v.size(3) = 128" in out["bwd_dv_q_dim"], out["bwd_dv_q_dim"]
    for case in ("fwd_out_q_dim", "fwd_varlen_out_q_dim", "bwd_dout_q_dim", "bwd_dv_q_dim"):
        assert out[case].startswith("ValueError: invalid argument"), out[case]


def test_supported_pairs_reach_the_block_dv_kernels(prefix, build_dir):
    """Every check passes: the call gets to the _vdim kernel's table. Every
    profile compiles fp16 q/k 128 with v 64 (bottom-right causal, batched):
    the missing driver stops it. Other pairs stop there too where the build
    has them, else at the table, which names the functional (ci)."""
    out = _results(prefix)
    assert "CUDA driver not available" in out["fwd_128_64"], out["fwd_128_64"]
    ci = _profile(build_dir) == "ci"
    for case in ("fwd_192_128", "fwd_256_128", "fwd_varlen_192_128"):
        missing = "attn_fwd_vdim functional" in out[case] and "BLOCK_DV=128" in out[case] \
            and "is not in this build" in out[case]
        assert missing or (not ci and "CUDA driver not available" in out[case]), out[case]
    # The backward launches the preprocess (delta over V's head dim) first, with
    # the V bucket's usual kernel: the missing driver or the table stops it.
    for case in ("bwd_192_128", "bwd_varlen_128_64"):
        assert out[case].startswith("RuntimeError") and ("CUDA driver not available" in out[case]
                                                        or "is not in this build" in out[case]), out[case]
