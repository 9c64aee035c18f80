"""fused_experts' autograd without a GPU: the training ops' schemas, fake
implementations and autograd wiring under fake CUDA tensors (what
torch.compile traces), and the errors for what has no backward."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
F16, BF16 = torch.float16, torch.bfloat16


@pytest.fixture
def no_extension_launch(monkeypatch):
    from aotriton import _moe_launch

    monkeypatch.setattr(_moe_launch, "_C", None)  # any eager launch fails the test


def _args(M=5, K=64, N=32, E=4, topk=2, dtype=BF16):
    x = torch.randn(M, K, device="cuda").to(dtype).requires_grad_()
    w1 = torch.randn(E, 2 * N, K, device="cuda").to(dtype).requires_grad_()
    w2 = torch.randn(E, K, N, device="cuda").to(dtype).requires_grad_()
    w = torch.rand(M, topk, device="cuda").requires_grad_()
    ids = torch.randint(0, E, (M, topk), device="cuda", dtype=torch.int32)
    return x, w1, w2, w, ids


@pytest.mark.parametrize("op", ["fused_experts_train", "fused_experts_backward"])
def test_training_ops_are_functional(op):
    schema = getattr(torch.ops.aotriton, op).default._schema
    assert not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments), str(schema)
    assert len(schema.returns) == (1 if op == "fused_experts_train" else 4)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_fused_experts_backward_traces_with_fake_tensors(dtype, no_extension_launch):
    with FakeTensorMode():
        x, w1, w2, w, ids = _args(dtype=dtype)
        out = aotriton.fused_experts(x, w1, w2, w, ids)
        assert out.shape == x.shape and out.dtype == dtype and out.requires_grad
        out.sum().backward()
        for t in (x, w1, w2, w):
            assert t.grad is not None and t.grad.shape == t.shape and t.grad.dtype == t.dtype


def test_router_weights_in_bf16_get_bf16_gradients(no_extension_launch):
    with FakeTensorMode():
        x, w1, w2, _, ids = _args()
        w = torch.rand(5, 2, device="cuda").to(BF16).requires_grad_()
        aotriton.fused_experts(x, w1, w2, w, ids).sum().backward()
        assert w.grad.dtype == BF16 and w.grad.shape == w.shape


def test_no_grad_keeps_the_inference_op(no_extension_launch):
    with FakeTensorMode():
        x, w1, w2, w, ids = _args()
        with torch.no_grad():
            out = aotriton.fused_experts(x, w1, w2, w, ids)
        assert not out.requires_grad


def test_fp8_and_expert_map_with_grad_raise(no_extension_launch):
    with FakeTensorMode():
        x, w1, w2, w, ids = _args()
        fp8 = torch.float8_e4m3fn
        with pytest.raises(NotImplementedError, match="inference-only"):
            aotriton.fused_experts(x, w1.detach().to(fp8), w2.detach().to(fp8), w, ids, use_fp8_w8a8=True,
                                   w1_scale=torch.ones(1, device="cuda"), w2_scale=torch.ones(1, device="cuda"))
        with pytest.raises(NotImplementedError, match="expert_map"):
            aotriton.fused_experts(x, w1, w2, w, ids, expert_map=torch.arange(4, dtype=torch.int32, device="cuda"))
        with pytest.raises(ValueError, match="inplace / out / workspace"):
            aotriton.fused_experts(x, w1, w2, w, ids, out=torch.empty_like(x))
