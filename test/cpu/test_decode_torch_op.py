"""flash_attn_with_kvcache's torch layer without a GPU: the custom op's
schema (caches declared mutated), the traced path through the fake
implementation (FakeTensorMode makes fake CUDA tensors on a CPU-only torch),
and the errors raised before any launch."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch_op_helpers import RecordOps, fail_on_launch

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
F16, I32 = torch.float16, torch.int32


@pytest.fixture
def no_extension_launch(monkeypatch):
    from aotriton import _decode_ops
    fail_on_launch(monkeypatch, _decode_ops, ("launch",))
    monkeypatch.setattr(_decode_ops, "_C", None)


def rnd(*shape, dtype=F16):
    return torch.randn(*shape, device="cuda").to(dtype)


def test_op_schema_declares_the_mutated_caches():
    schema = torch.ops.aotriton.attn_decode.default._schema
    written = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    assert written == {"out", "lse", "k_cache", "v_cache"}, str(schema)
    assert len(schema.returns) == 0


def test_signature_has_flash_attn_keywords():
    import inspect
    params = list(inspect.signature(aotriton.flash_attn_with_kvcache).parameters)
    # flash-attn 2's positional order
    assert params[:19] == ["q", "k_cache", "v_cache", "k", "v", "rotary_cos", "rotary_sin", "cache_seqlens",
                           "cache_batch_idx", "cache_leftpad", "block_table", "softmax_scale", "causal",
                           "window_size", "softcap", "rotary_interleaved", "alibi_slopes", "num_splits",
                           "return_softmax_lse"]


def test_traced_call_goes_through_the_op(no_extension_launch):
    with FakeTensorMode(), RecordOps() as rec:
        q = rnd(3, 2, 8, 64)
        kc, vc = rnd(12, 16, 2, 64), rnd(12, 16, 2, 64)
        table = torch.zeros(3, 4, dtype=I32, device="cuda")
        out, lse = aotriton.flash_attn_with_kvcache(q, kc, vc, rnd(3, 2, 2, 64), rnd(3, 2, 2, 64), cache_seqlens=5,
                                                    block_table=table, causal=True, return_softmax_lse=True)
        assert out.shape == q.shape and out.dtype == F16 and lse.shape == (3, 8, 2) and lse.dtype == torch.float32
        out = aotriton.flash_attn_with_kvcache(q, rnd(3, 40, 2, 64), rnd(3, 40, 2, 64),
                                               cache_seqlens=torch.ones(3, dtype=I32, device="cuda"))
        assert out.shape == q.shape
    assert rec.ops.count("aotriton.attn_decode") == 2


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(window_size=(-2, 0)), ValueError, "window_size"),
    (dict(window_size=4), ValueError, "pair of ints"),
    (dict(softcap=-1.0), ValueError, "softcap"),
    (dict(softcap=30.0, alibi_slopes=torch.float32), NotImplementedError, "together"),
    (dict(alibi_slopes=torch.float64), ValueError, "fp32"),
    (dict(rotary_cos=torch.float32), NotImplementedError, "rotary"),
    (dict(cache_batch_idx=torch.int32), NotImplementedError, "cache_batch_idx"),
    (dict(cache_leftpad=torch.int32), NotImplementedError, "cache_leftpad"),
])
def test_bad_features_raise(kwargs, error, words, no_extension_launch):
    with FakeTensorMode():
        # dtype placeholders become (fake CUDA) tensors of that dtype
        kwargs = {k: torch.ones(8, device="cuda").to(v) if isinstance(v, torch.dtype) else v
                  for k, v in kwargs.items()}
        q = rnd(1, 1, 8, 64)
        with pytest.raises(error, match=words):
            aotriton.flash_attn_with_kvcache(q, q, q, cache_seqlens=0, **kwargs)


def test_traced_features_reach_the_op(monkeypatch):
    """window, softcap and ALiBi slopes (as [1, Hq]) travel to the op."""
    seen = []
    from aotriton import _decode_ops
    monkeypatch.setattr(_decode_ops, "launch", lambda *a: seen.append(a))
    with FakeTensorMode():
        q, kc = rnd(2, 1, 8, 64), rnd(2, 32, 2, 64)
        slopes = torch.ones(8, device="cuda")
        aotriton.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=3, window_size=(16, 0), alibi_slopes=slopes)
        aotriton.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=3, softcap=50.0)
    assert len(seen) == 0  # traced: the fake implementation ran, not the launch
    schema = torch.ops.aotriton.attn_decode.default._schema
    names = [a.name for a in schema.arguments]
    assert {"alibi_slopes", "window_left", "window_right", "softcap"} <= set(names)


def test_bad_arguments_raise_before_launch(no_extension_launch):
    q = torch.randn(1, 1, 8, 64, dtype=F16)
    kc = torch.randn(1, 32, 2, 64, dtype=F16)
    with pytest.raises(ValueError, match="CUDA tensor"):
        aotriton.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=0)
    with FakeTensorMode():
        q, kc = rnd(1, 1, 8, 64), rnd(1, 32, 2, 64)
        with pytest.raises(ValueError, match="together"):
            aotriton.flash_attn_with_kvcache(q, kc, kc, k=rnd(1, 1, 2, 64), cache_seqlens=0)
        with pytest.raises(ValueError, match="int32"):
            aotriton.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=torch.zeros(1, dtype=torch.int64,
                                                                                  device="cuda"))
        with pytest.raises(ValueError, match="required"):
            aotriton.flash_attn_with_kvcache(q, kc, kc)
