"""The torch layer of the MoE quantization modes (fp8 per channel, int8 w8a16,
int4 w4a16) without a GPU: vLLM keywords reach torch.ops.aotriton.fused_experts_quant
under fake tensors, bad inputs raise clear errors before any launch, and the
custom ops are registered with their mutations."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch_op_helpers import RecordOps, fail_on_launch

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
from aotriton import _moe_quant  # noqa: E402

BF16, F32, I32, U8, I8, FP8 = torch.bfloat16, torch.float32, torch.int32, torch.uint8, torch.int8, torch.float8_e4m3fn
M, E, N, K, TOPK = 3, 4, 128, 256, 2


@pytest.fixture
def no_launch(monkeypatch):
    fail_on_launch(monkeypatch, _moe_quant, ("_launch_fused", "_launch_gemm", "_launch_token_quant"))


def t(*shape, dtype=BF16):
    return torch.empty(*shape, device="cuda", dtype=dtype)


def routing():
    return t(M, TOPK, dtype=F32), torch.zeros(M, TOPK, dtype=I32, device="cuda")


def mode_args(mode, group=128):
    """(w1, w2, keywords) of one mode with vLLM's shapes."""
    if mode == "fp8_channel":
        return (t(E, 2 * N, K, dtype=FP8), t(E, K, N, dtype=FP8),
                dict(use_fp8_w8a8=True, per_channel_quant=True, w1_scale=t(E, 2 * N, 1, dtype=F32),
                     w2_scale=t(E, K, 1, dtype=F32)))
    if mode == "int8":
        return (t(E, 2 * N, K, dtype=I8), t(E, K, N, dtype=I8),
                dict(use_int8_w8a16=True, w1_scale=t(E, 2 * N, dtype=BF16), w2_scale=t(E, K, dtype=BF16)))
    return (t(E, 2 * N, K // 2, dtype=U8), t(E, K, N // 2, dtype=U8),
            dict(use_int4_w4a16=True, block_shape=[0, group], w1_scale=t(E, 2 * N, K // group, dtype=BF16),
                 w2_scale=t(E, K, N // group, dtype=BF16), w1_zp=t(E, N, K // group, dtype=U8),
                 w2_zp=t(E, K // 2, N // group, dtype=U8)))


@pytest.mark.parametrize("name,mutates", [("fused_experts_quant", {"out", "workspace"}),
                                          ("grouped_gemm_quant", {"C"}), ("per_token_quant_fp8", {"q", "scales"})])
def test_quant_ops_registered(name, mutates):
    op = getattr(torch.ops.aotriton, name).default
    assert {a.name for a in op._schema.arguments if a.alias_info is not None and a.alias_info.is_write} == mutates


@pytest.mark.parametrize("mode", ["fp8_channel", "int8", "int4"])
def test_fused_experts_quant_traces_through_the_op(mode, no_launch):
    with FakeTensorMode(), RecordOps() as rec:
        w1, w2, kw = mode_args(mode)
        w, ids = routing()
        out = aotriton.fused_experts(t(M, K), w1, w2, w, ids, **kw)
        assert out.shape == (M, K) and out.dtype == BF16
    assert "aotriton.fused_experts_quant" in rec.ops
    assert "aotriton.fused_experts" not in rec.ops


def test_per_token_quant_and_gemm_trace(no_launch):
    with FakeTensorMode(), RecordOps() as rec:
        q, s = aotriton.per_token_quant_fp8(t(5, 64))
        assert q.dtype == FP8 and s.shape == (5, 1) and s.dtype == F32
        s_ids, e_ids, ntpp = t(64, dtype=I32), t(4, dtype=I32), t(1, dtype=I32)
        c = t(6, N)
        aotriton.invoke_grouped_gemm_quant(t(3, K), t(E, N, K // 2, dtype=U8), c, None, s_ids, e_ids, ntpp, 2, 16,
                                           aotriton.moe.QUANT_INT4_W4A16, t(E, N, K // 128, dtype=F32),
                                           group_size=128)
    assert {"aotriton.per_token_quant_fp8", "aotriton.grouped_gemm_quant"} <= set(rec.ops)


@pytest.mark.parametrize("change,error,match", [
    (dict(block_shape=None), ValueError, r"block_shape=\[0, group_size\]"),
    (dict(block_shape=[0, 32]), NotImplementedError, "group size 32"),
    (dict(block_shape=[0, 192]), ValueError, "does not divide"),   # K = 256
    (dict(w2_zp=None), ValueError, "together"),
    (dict(w1_scale=((E, 2 * N, 3), F32)), ValueError, "w1_scale must have shape"),
    (dict(w1_zp=((E, N, 2), I8)), ValueError, "w1_zp must be uint8"),
    (dict(a1_scale=((1,), F32)), ValueError, "a1_scale / a2_scale must be None"),
    (dict(w1_scale=((E, 2 * N, 2), I32)), ValueError, "fp32, fp16 or bf16"),
])
def test_int4_bad_inputs(change, error, match, no_launch):
    with FakeTensorMode():
        w1, w2, kw = mode_args("int4")
        w, ids = routing()
        # (shape, dtype) pairs become fake tensors here (inside the fake mode).
        kw.update({k: t(*v[0], dtype=v[1]) if isinstance(v, tuple) else v for k, v in change.items()})
        with pytest.raises(error, match=match):
            aotriton.fused_experts(t(M, K), w1, w2, w, ids, **kw)


def test_int4_odd_hidden_size_and_wrong_weights(no_launch):
    with FakeTensorMode():
        w, ids = routing()
        w1, w2, kw = mode_args("int4")
        with pytest.raises(ValueError, match="even hidden size"):
            aotriton.fused_experts(t(M, K - 1), w1, w2, w, ids, **kw)
        with pytest.raises(ValueError, match="w1 must be torch.uint8"):
            aotriton.fused_experts(t(M, K), w1.view(I8), w2, w, ids, **kw)


@pytest.mark.parametrize("mode", ["fp8_channel", "int8"])
def test_per_channel_bad_inputs(mode, no_launch):
    with FakeTensorMode():
        w1, w2, kw = mode_args(mode)
        w, ids = routing()
        with pytest.raises(ValueError, match="w2_scale must have shape"):
            aotriton.fused_experts(t(M, K), w1, w2, w, ids, **dict(kw, w2_scale=t(E, K, 2, dtype=F32)))
        with pytest.raises(ValueError, match="w1_scale is required"):
            aotriton.fused_experts(t(M, K), w1, w2, w, ids, **dict(kw, w1_scale=None))
        with pytest.raises(ValueError, match="w1 must be"):
            aotriton.fused_experts(t(M, K), w2.transpose(1, 2).to(BF16), w2, w, ids, **kw)


def test_mode_flags():
    with pytest.raises(ValueError, match="exclusive"):
        _moe_quant.quant_mode(True, True, False, False, None, None, None)
    with pytest.raises(NotImplementedError, match="use_int4_w4a16=True only"):
        _moe_quant.quant_mode(False, True, False, False, None, object(), None)
    with pytest.raises(NotImplementedError, match="per-channel scales only"):
        _moe_quant.quant_mode(False, True, False, False, [0, 128], None, None)
    with pytest.raises(ValueError, match="exclusive"):
        _moe_quant.quant_mode(True, False, False, True, [128, 128], None, None)
    assert _moe_quant.quant_mode(True, False, False, False, None, None, None) is None  # per tensor: moe.py
    assert _moe_quant.quant_mode(False, False, True, False, [0, 64], None, None) == (_moe_quant.QUANT_INT4_W4A16, 64)
