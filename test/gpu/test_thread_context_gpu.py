"""A call on the default stream from a thread with no current CUDA context.

torch's autograd worker threads are such threads: the MoE backward failed there
with "no current CUDA context for the default stream" (a GPU run of the MoE
tests alone, where no earlier torch call had made the context current in that
thread). The binding now makes the tensors' device current first
(bindings/python/aotriton/_glue.py, the C++ aotriton::ensure_current_device)."""
import ctypes
import threading

import pytest
import torch

DEV = "cuda"


def _context_is_current():
    cuda = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    assert cuda.cuCtxGetCurrent(ctypes.byref(ctx)) == 0
    return bool(ctx.value)


def _in_fresh_thread(fn):
    result = {}

    def work():
        try:
            result["had_context"] = _context_is_current()
            result["value"] = fn()
        except Exception as e:  # noqa: BLE001  reported by the test
            result["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return result


def test_fused_experts_from_a_thread_without_a_context():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import aotriton

    M, E, topk, K, N = 5, 8, 2, 256, 128
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(M, K, generator=gen).to(DEV, torch.float16)
    w1 = (torch.randn(E, 2 * N, K, generator=gen) / K ** 0.5).to(DEV, torch.float16)
    w2 = (torch.randn(E, K, N, generator=gen) / N ** 0.5).to(DEV, torch.float16)
    w = torch.rand(M, topk, generator=gen).to(DEV)
    ids = torch.rand(M, E, generator=gen).topk(topk, dim=-1).indices.to(DEV, torch.int32)
    ref = aotriton.fused_experts(x, w1, w2, w, ids)
    ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids), dtype=torch.uint8, device=DEV)
    out = torch.full_like(x, float("nan"))
    torch.cuda.synchronize()
    # Preallocated out and workspace: nothing in the thread touches the CUDA runtime first.
    r = _in_fresh_thread(lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws))
    assert not r["had_context"], "the thread already had a context: the test would not test anything"
    assert "error" not in r, r.get("error")
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("fast", [True, False], ids=["cpp_fast_path", "python_path"])
def test_flash_forward_from_a_thread_without_a_context(fast):
    """flash_attn_func without autograd: the C++ fast path (_aotriton_torch,
    when loaded) and the Python path each make the context current."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import aotriton
    from aotriton import _torch_fast

    if fast and _torch_fast.attn_fwd_plain is None:
        pytest.skip(f"torch fast path: {_torch_fast.status}")
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 128, 4, 64, generator=gen).to(DEV, torch.float16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float()).transpose(1, 2)
    torch.cuda.synchronize()

    def call():
        if fast:
            return aotriton.flash_attn_func(q, k, v)
        with _torch_fast.off():
            return aotriton.flash_attn_func(q, k, v)

    r = _in_fresh_thread(call)
    assert not r["had_context"], "the thread already had a context: the test would not test anything"
    assert "error" not in r, r.get("error")
    torch.cuda.synchronize()
    torch.testing.assert_close(r["value"].float(), ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("fast", [True, False], ids=["cpp_fast_path", "python_path"])
def test_silu_and_mul_from_a_thread_without_a_context(fast):
    """silu_and_mul into a preallocated out (nothing in the thread allocates),
    through the C++ fast path and the Python path."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import aotriton
    from aotriton import _torch_fast

    if fast and _torch_fast.act_and_mul_plain is None:
        pytest.skip(f"torch fast path: {_torch_fast.status}")
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 256, generator=gen).to(DEV, torch.float16)
    ref = (torch.nn.functional.silu(x[:, :128].float()) * x[:, 128:].float())
    out = torch.full((64, 128), float("nan"), dtype=torch.float16, device=DEV)
    torch.cuda.synchronize()

    def call():
        if fast:
            return aotriton.silu_and_mul(x, out)
        with _torch_fast.off():
            return aotriton.silu_and_mul(x, out)

    r = _in_fresh_thread(call)
    assert not r["had_context"], "the thread already had a context: the test would not test anything"
    assert "error" not in r, r.get("error")
    torch.cuda.synchronize()
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=2e-3)
