"""The torch C++ fast path (_aotriton_torch) without a GPU: it loads under the
torch it was built for and only there, and hands everything it does not serve
(here: CPU tensors) back to the Python path, which names the error."""
import pytest

torch = pytest.importorskip("torch")


def test_loads_under_its_torch_and_falls_back(prefix):
    import aotriton
    from aotriton import _build_info, _torch_fast

    if not _build_info.TORCH_EXT_VERSION:
        pytest.skip("built without the torch C++ fast path (no torch at build time)")
    assert _build_info.TORCH_EXT_VERSION == torch.__version__
    assert _torch_fast.ext is not None, aotriton.build_info()["torch_extension"]
    assert aotriton.build_info()["torch_extension"].startswith("loaded")
    q = torch.randn(1, 8, 2, 16)
    assert _torch_fast.attn_fwd_plain(q, q, q, None, 0) is NotImplemented
    with pytest.raises(TypeError, match="5 arguments"):
        _torch_fast.attn_fwd_plain(q, q)
    with pytest.raises(ValueError, match="q must be a CUDA tensor"):
        aotriton.flash_attn_func(q, q, q)


def test_not_loaded_under_another_torch(prefix, monkeypatch):
    from aotriton import _build_info, _torch_fast

    monkeypatch.setattr(_build_info, "TORCH_EXT_VERSION", "0.0.0+other")
    ext, status = _torch_fast._load()
    assert ext is None and "built for torch 0.0.0+other" in status
    monkeypatch.setattr(_build_info, "TORCH_EXT_VERSION", torch.__version__)
    monkeypatch.setenv("AOTRITON_TORCH_EXT", "0")
    ext, status = _torch_fast._load()
    assert ext is None and "AOTRITON_TORCH_EXT=0" in status


def test_declines_fake_tensors(prefix):
    """Under FakeTensorMode (fake CUDA tensors on a CPU-only torch, as torch.export and
    make_fx trace) the fast path must hand every call back to the custom-op route."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from aotriton import _torch_fast

    if _torch_fast.ext is None:
        pytest.skip(f"torch C++ fast path: {_torch_fast.status}")
    with FakeTensorMode():
        q = torch.empty(1, 8, 2, 64, device="cuda", dtype=torch.float16)
        x = torch.empty(4, 64, device="cuda", dtype=torch.float16)
        assert _torch_fast.attn_fwd_plain(q, q, q, None, 0) is NotImplemented
        assert _torch_fast.act_and_mul_plain(x, None, 0) is NotImplemented


def test_off_switches_both_entry_points_for_a_block(prefix):
    from aotriton import _torch_fast

    before = (_torch_fast.attn_fwd_plain, _torch_fast.act_and_mul_plain)
    with _torch_fast.off():
        assert _torch_fast.attn_fwd_plain is None and _torch_fast.act_and_mul_plain is None
    assert (_torch_fast.attn_fwd_plain, _torch_fast.act_and_mul_plain) == before


def test_shares_pyaotriton_runtime(prefix):
    """The fast path takes the C++ API from pyaotriton's capsule: no second
    runtime (module cache, image store, preload state) inside _aotriton_torch."""
    from pathlib import Path

    import pyaotriton
    from aotriton import _torch_fast

    if _torch_fast.ext is None:
        pytest.skip(f"torch C++ fast path: {_torch_fast.status}")
    assert type(pyaotriton._runtime_api).__name__ == "PyCapsule"
    assert "pyaotriton._runtime_api" in repr(pyaotriton._runtime_api)
    # The runtime's own strings (store reader, module cache) are in pyaotriton only.
    ext_bytes = Path(_torch_fast.ext.__file__).read_bytes()
    assert b"aotriton.images" not in ext_bytes and b"AOTRITON_IMAGE_DIR" not in ext_bytes
    assert b"AOTRITON_IMAGE_DIR" in Path(pyaotriton.__file__).read_bytes()
