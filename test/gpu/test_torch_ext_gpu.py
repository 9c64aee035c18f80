"""The torch C++ fast path (bindings/torch_ext, _aotriton_torch): the plain
eager flash_attn_func forward in C++. Same kernels as the pyaotriton path, so
the same bits; everything it does not serve falls back to the Python path."""
import math

import pytest
import torch

from flash_reference import FWD_TOL, attention_ref, rel_err


@pytest.fixture(scope="module")
def ext():
    import aotriton
    from aotriton import _build_info, _torch_fast

    if not _build_info.TORCH_EXT_VERSION:
        pytest.skip("built without the torch C++ fast path (no torch at build time)")
    # Built for this torch: it must load (a silent fallback would hide a broken build).
    assert _torch_fast.ext is not None, aotriton.build_info()["torch_extension"]
    return _torch_fast.ext


def python_path(fn):
    """fn() with the C++ fast path off: the pyaotriton route of the same call."""
    from aotriton import _torch_fast

    with _torch_fast.off():
        return fn()


def qkv(B, Sq, Sk, Hq, Hk, D, dtype, layout="bshd"):
    def t(S, H):
        if layout == "bshd":
            return torch.randn(B, S, H, D, device="cuda", dtype=dtype)
        return torch.randn(B, H, S, D, device="cuda", dtype=dtype).transpose(1, 2)
    return t(Sq, Hq), t(Sk, Hk), t(Sk, Hk)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_matches_reference_and_python_path(ext, dtype, causal, layout):
    import aotriton

    torch.manual_seed(3 + causal)
    q, k, v = qkv(2, 97, 130, 8, 2, 64, dtype, layout)
    scale = 0.7 / math.sqrt(64)
    assert ext.attn_fwd_plain(q, k, v, scale, 2 if causal else 0) is not NotImplemented
    out = aotriton.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal)
    assert out.stride() == q.stride() and out.dtype == dtype
    ref, _ = attention_ref(q, k, v, scale, 2 if causal else 0)  # flash-attn's causal: bottom-right
    assert rel_err(out, ref) < FWD_TOL[dtype]
    same = python_path(lambda: aotriton.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal))
    assert torch.equal(out, same), "the C++ and Python paths launch the same kernel: same bits"


def test_default_scale_and_head_dims(ext):
    import aotriton

    for D in (16, 96, 128, 256):
        torch.manual_seed(D)
        q, k, v = qkv(1, 65, 65, 2, 2, D, torch.float16)
        ref, _ = attention_ref(q, k, v, 1 / math.sqrt(D), 0)
        assert rel_err(aotriton.flash_attn_func(q, k, v), ref) < FWD_TOL[torch.float16], D


def test_side_stream(ext):
    import aotriton

    torch.manual_seed(11)
    q, k, v = qkv(2, 256, 256, 4, 4, 128, torch.bfloat16)
    ref = aotriton.flash_attn_func(q, k, v, causal=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = aotriton.flash_attn_func(q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, ref)


def test_cuda_graph_replay(ext):
    import aotriton

    torch.manual_seed(12)
    q, k, v = qkv(2, 128, 200, 4, 1, 64, torch.float16)
    aotriton.flash_attn_func(q, k, v)  # loads the kernel outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = aotriton.flash_attn_func(q, k, v)
    for seed in (1, 2):
        torch.manual_seed(seed)
        for t in (q, k, v):
            t.copy_(torch.randn_like(t))
        out.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        ref, _ = attention_ref(q, k, v, 1 / 8, 0)
        assert rel_err(out, ref) < FWD_TOL[torch.float16]


def test_falls_back_for_what_it_does_not_serve(ext):
    import aotriton

    torch.manual_seed(13)
    q, k, v = qkv(1, 33, 33, 2, 2, 64, torch.float16)
    # Gradients: the Python path's autograd.Function.
    qg = q.clone().requires_grad_()
    assert ext.attn_fwd_plain(qg, k, v, None, 0) is NotImplemented
    out = aotriton.flash_attn_func(qg, k, v)
    assert out.grad_fn is not None
    out.sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    # Under no_grad the same tensor is served in C++.
    with torch.no_grad():
        assert ext.attn_fwd_plain(qg, k, v, None, 0) is not NotImplemented
    # Tensor subclasses and another head dim for v (MLA) take the Python path
    # (a Parameter is a plain tensor to both paths).
    class Sub(torch.Tensor):
        pass

    assert ext.attn_fwd_plain(q.as_subclass(Sub), k, v, None, 0) is NotImplemented
    assert ext.attn_fwd_plain(q, k, v[..., :32].contiguous(), None, 0) is NotImplemented


def test_bad_input_is_named_by_the_python_path(ext):
    import aotriton

    q, k, v = qkv(1, 16, 16, 2, 2, 64, torch.float16)
    with pytest.raises(ValueError, match="CUDA tensor"):
        aotriton.flash_attn_func(q.cpu(), k, v)
    with pytest.raises(ValueError, match="4-D"):
        aotriton.flash_attn_func(q[0], k, v)
    with pytest.raises(ValueError):
        aotriton.flash_attn_func(q, k.to(torch.bfloat16), v)
    with pytest.raises(ValueError):  # num_heads_q not a multiple of num_heads_k: the library's own check
        aotriton.flash_attn_func(q, *qkv(1, 16, 16, 3, 3, 64, torch.float16)[1:])
    with pytest.raises(TypeError):
        ext.attn_fwd_plain(q, k, v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("given_out", [False, True])
def test_act_and_mul(ext, dtype, act, given_out):
    import aotriton

    torch.manual_seed(21)
    x = torch.randn(37, 2 * 200, device="cuda", dtype=dtype) * 3
    xs = torch.randn(37, 3 * 200, device="cuda", dtype=dtype)[:, :400]  # strided rows
    if act == "silu":
        fn, ref_fn = aotriton.silu_and_mul, torch.nn.functional.silu
    elif act == "gelu":
        fn, ref_fn = aotriton.gelu_and_mul, torch.nn.functional.gelu
    else:
        fn = lambda t, out=None: aotriton.gelu_and_mul(t, out, approximate="tanh")  # noqa: E731
        ref_fn = lambda t: torch.nn.functional.gelu(t, approximate="tanh")  # noqa: E731
    for inp in (x, xs):
        out = torch.full((37, 200), float("nan"), device="cuda", dtype=dtype) if given_out else None
        got = fn(inp, out)
        if given_out:
            assert got is out
        ref = ref_fn(inp[:, :200].double()) * inp[:, 200:].double()
        tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
        assert ((got.double() - ref).abs() / ref.abs().clamp_min(1)).max() < tol
        assert torch.equal(got, python_path(lambda: fn(inp))), "same kernel on both paths: same bits"


def test_act_and_mul_falls_back_and_errors(ext):
    import aotriton

    x = torch.randn(4, 64, device="cuda", dtype=torch.float16)
    xg = x.clone().requires_grad_()
    assert ext.act_and_mul_plain(xg, None, 0) is NotImplemented
    with pytest.raises(NotImplementedError, match="no backward"):
        aotriton.silu_and_mul(xg)
    with torch.no_grad():
        assert aotriton.silu_and_mul(xg).shape == (4, 32)
    with pytest.raises(ValueError):  # out of the wrong width: the library's own check, through C++
        aotriton.silu_and_mul(x, torch.empty(4, 31, device="cuda", dtype=torch.float16))
    with pytest.raises(ValueError, match="CUDA"):
        aotriton.silu_and_mul(x.cpu())


SHARED_RUNTIME_SCRIPT = r"""
import json
import aotriton, torch
from aotriton import _torch_fast
ext = _torch_fast.ext
q = torch.randn(1, 64, 2, 64, device="cuda", dtype=torch.float16)
n0 = aotriton.module_load_count()
assert ext.attn_fwd_plain(q, q, q, None, 0) is not NotImplemented
n1 = aotriton.module_load_count()
aotriton.preload([torch.bfloat16], [64], causal_types=("none",), backward=False)
n2 = aotriton.module_load_count()
qb = torch.randn(3, 200, 2, 64, device="cuda", dtype=torch.bfloat16)
assert ext.attn_fwd_plain(qb, qb, qb, None, 0) is not NotImplemented
x = torch.randn(8, 128, device="cuda", dtype=torch.float16)
n3 = aotriton.module_load_count()
assert ext.act_and_mul_plain(x, None, 0) is not NotImplemented
torch.cuda.synchronize()
print(json.dumps([n1 - n0, n2 - n1, aotriton.module_load_count() - n3, n3 - n2]))
"""


def test_one_runtime_per_process(ext):
    """The fast path runs on pyaotriton's runtime (runtime_api.h capsule), not a
    second copy: its module loads count in aotriton.module_load_count(), and
    preload() warms the kernels it launches (a fresh process, so nothing is
    loaded before)."""
    import json
    import os
    import subprocess
    import sys

    from testenv import PY_DIR

    env = {**os.environ, "PYTHONPATH": str(PY_DIR)}
    r = subprocess.run([sys.executable, "-c", SHARED_RUNTIME_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    first_call, preloaded, act_first_call, after_preload = json.loads(r.stdout.strip().splitlines()[-1])
    assert first_call >= 1 and preloaded >= 1 and act_first_call >= 1
    assert after_preload == 0, "preload() must cover the fast path's kernels"
