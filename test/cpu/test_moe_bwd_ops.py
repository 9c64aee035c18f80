"""fused_experts' autograd without a GPU: the training ops' schemas, fake
implementations and autograd wiring under fake CUDA tensors (what
torch.compile traces), and the errors for what has no backward."""
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch_op_helpers import graph_recording_backend

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32


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


def _ref_forward(x, w1, w2, w, ids):
    out = torch.zeros(x.shape, dtype=torch.float64)
    for m in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[m, j])
            gate, up = (x[m].double() @ w1[e].double().T).chunk(2)
            out[m] += w[m, j].double() * ((F.silu(gate) * up) @ w2[e].double().T)
    return out


def _ref_backward(dout, x, w1, w2, w, ids):
    """Analytic float64 gradients (the launcher runs below autograd)."""
    dx, dw1, dw2 = (torch.zeros(t.shape, dtype=torch.float64) for t in (x, w1, w2))
    dtw = torch.zeros(w.shape, dtype=torch.float64)
    d = dout.double()
    for m in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[m, j])
            xm, W1, W2, wj = x[m].double(), w1[e].double(), w2[e].double(), w[m, j].double()
            gate, up = (xm @ W1.T).chunk(2)
            s = torch.sigmoid(gate)
            a = gate * s * up
            dtw[m, j] = (a @ W2.T) @ d[m]
            da = wj * (d[m] @ W2)
            dw2[e] += wj * torch.outer(d[m], a)
            dh = torch.cat([da * up * s * (1 + gate * (1 - s)), da * gate * s])
            dw1[e] += torch.outer(dh, xm)
            dx[m] += dh @ W1
    return dx, dw1, dw2, dtw


@pytest.fixture
def reference_launch(monkeypatch):
    """fused_experts' launches computed by the references on CPU tensors (device checks relaxed)."""
    from aotriton import _moe_launch, moe

    calls = []

    def fwd(out, hidden, w1, w2, topk_weights, topk_ids, ws, activation, quant, *rest):
        calls.append("fwd")
        out.copy_(_ref_forward(hidden, w1, w2, topk_weights, topk_ids))

    def bwd(dout, hidden, w1, w2, topk_weights, topk_ids, activation, dx, dw1, dw2, dtw, force_config=None):
        calls.append("bwd")
        assert topk_weights.dtype == torch.float32 and topk_ids.dtype == torch.int32
        for dst, src in zip((dx, dw1, dw2, dtw), _ref_backward(dout, hidden, w1, w2, topk_weights, topk_ids)):
            dst.copy_(src)

    monkeypatch.setattr(_moe_launch, "fused_experts", fwd)
    monkeypatch.setattr(_moe_launch, "fused_experts_backward", bwd)
    monkeypatch.setattr(moe, "_same_device", lambda *args: None)
    return calls


def _cpu_args(dtype=F32, router_dtype=F32):
    torch.manual_seed(0)
    x = torch.randn(5, 16, dtype=dtype, requires_grad=True)
    w1 = (torch.randn(3, 16, 16) / 4).to(dtype).requires_grad_()
    w2 = (torch.randn(3, 16, 8) / 3).to(dtype).requires_grad_()
    w = torch.rand(5, 2).to(router_dtype).requires_grad_()
    ids = torch.tensor([[0, 1], [2, 0], [1, 2], [0, 2], [1, 0]], dtype=torch.int32)
    return x, w1, w2, w, ids


def _autograd_reference(x, w1, w2, w, ids, dout):
    leaves = [t.detach().double().requires_grad_() for t in (x, w1, w2, w)]
    out = _ref_forward(*leaves, ids)
    return out, torch.autograd.grad(out, leaves, dout.double())


@pytest.mark.parametrize("router_dtype", [F32, BF16])
def test_eager_autograd_wiring(reference_launch, router_dtype):
    x, w1, w2, w, ids = _cpu_args(router_dtype=router_dtype)
    out = aotriton.fused_experts(x, w1, w2, w, ids)
    dout = torch.randn(out.shape)
    grads = torch.autograd.grad(out, (x, w1, w2, w), dout)
    ref, want = _autograd_reference(x, w1, w2, w, ids, dout)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    for g, wnt, t in zip(grads, want, (x, w1, w2, w)):
        assert g.dtype == t.dtype and g.shape == t.shape
        tol = 1e-2 if t.dtype == BF16 else 1e-5
        assert torch.allclose(g.double(), wnt, atol=tol, rtol=tol)
    assert reference_launch == ["fwd", "bwd"]


def test_compiled_autograd_goes_through_the_training_ops(reference_launch):
    graphs = {}
    x, w1, w2, w, ids = _cpu_args()
    try:
        f = torch.compile(lambda *a: aotriton.fused_experts(*a) * 2, fullgraph=True,
                          backend=graph_recording_backend(graphs))
        out = f(x, w1, w2, w, ids)
        dout = torch.randn(out.shape)
        grads = torch.autograd.grad(out, (x, w1, w2, w), dout)
    finally:
        torch._dynamo.reset()
    assert "aotriton.fused_experts_train" in graphs["fw"] and "aotriton.fused_experts_backward" in graphs["bw"]
    _, want = _autograd_reference(x, w1, w2, w, ids, 2 * dout)
    for g, wnt in zip(grads, want):
        assert torch.allclose(g.double(), wnt, atol=1e-5, rtol=1e-5)


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
