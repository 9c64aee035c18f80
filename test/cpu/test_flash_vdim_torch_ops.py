"""The torch layer with a V head dim other than the Q/K one (flash-attn's
convention: v.shape[-1] may differ), without a GPU: fake implementations give
out / dv V's head dim, and autograd (eager and through the custom ops under
torch.compile) carries it to the backward launch."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
F16, F32, I32 = torch.float16, torch.float32, torch.int32


def rnd(*shape, dtype=F16, device="cuda"):
    return torch.randn(*shape, device=device).to(dtype)


@pytest.fixture
def no_extension_launch(monkeypatch):
    from aotriton import _flash_launch

    def boom(*args, **kwargs):
        raise AssertionError("a traced call reached the extension")
    for name in ("_attn_fwd", "_attn_fwd_varlen", "_attn_bwd", "_attn_bwd_varlen"):
        monkeypatch.setattr(_flash_launch, name, boom)


def test_fake_outputs_take_v_head_dim(no_extension_launch):
    with FakeTensorMode():
        q, k, v = rnd(2, 9, 4, 192), rnd(2, 7, 2, 192), rnd(2, 7, 2, 128)
        out = aotriton.flash_attn_func(q, k, v, causal=True)
        assert out.shape == (2, 9, 4, 128) and out.is_contiguous()
        out, lse, _ = aotriton.flash_attn_func(q, k, v, return_attn_probs=True)
        assert out.shape == (2, 9, 4, 128) and lse.shape == (2, 4, 9)
        dq, dk, dv = aotriton.flash_attn_backward(out, q, k, v, out, lse)
        assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
        # (B, H, S, D) storage: out keeps q's dim order with V's head dim.
        qt, kt, vt = rnd(2, 4, 9, 128).transpose(1, 2), rnd(2, 4, 7, 128).transpose(1, 2), rnd(2, 4, 7, 64)
        o = aotriton.flash_attn_func(qt, kt, vt.transpose(1, 2))
        assert o.shape == (2, 9, 4, 64) and o.transpose(1, 2).is_contiguous()
        o = aotriton.scaled_dot_product_attention(qt.transpose(1, 2), kt.transpose(1, 2), vt, is_causal=True)
        assert o.shape == (2, 4, 9, 64) and o.is_contiguous()
        cu_q = torch.tensor([0, 5, 9], dtype=I32, device="cuda")
        cu_k = torch.tensor([0, 3, 7], dtype=I32, device="cuda")
        out, lse, _ = aotriton.flash_attn_varlen_func(rnd(9, 4, 128), rnd(7, 2, 128), rnd(7, 2, 64), cu_q, cu_k,
                                                      5, 4, return_attn_probs=True)
        assert out.shape == (9, 4, 64) and lse.shape == (4, 9)
        seed = torch.zeros(1, dtype=torch.int64, device="cuda")
        out, lse, mask = torch.ops.aotriton.attn_fwd(q, k, v, seed, seed, 0.1, 2, 0.0, False, None)
        assert out.shape == (2, 9, 4, 128) and mask.numel() == 0
        dq, dk, dv = torch.ops.aotriton.attn_bwd(out, q, k, v, out, lse, None, None, 0.1, 2, 0.0, None)
        assert dv.shape == v.shape and dk.shape == k.shape


def _reference(q, k, v, scale, causal):
    """float64 (out, lse) of [B, S, H, D] tensors through feature_ref.attention."""
    from feature_ref import attention

    rep = q.shape[2] // k.shape[2]
    outs, lses = [], []
    for b in range(q.shape[0]):
        qd, kd, vd = (t[b].double().transpose(0, 1) for t in (q, k, v))
        o, lse = attention(qd, kd.repeat_interleave(rep, 0), vd.repeat_interleave(rep, 0), scale, causal)
        outs.append(o.transpose(0, 1))
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)


def _reference_grads(q, k, v, dout, scale, causal):
    """dq, dk, dv of _reference written out (the custom ops run below autograd):
    dS = P * (dO V^T - rowsum(dO * O)); float64."""
    from feature_ref import scores, visible

    B, Sq, Hq, _ = q.shape
    Hk, Sk = k.shape[2], k.shape[1]
    out, lse = _reference(q, k, v, scale, causal)
    grads = []
    for b in range(B):
        qd, kd, vd, do, od = (t[b].double().transpose(0, 1) for t in (q, k, v, dout, out))
        kd, vd = kd.repeat_interleave(Hq // Hk, 0), vd.repeat_interleave(Hq // Hk, 0)
        p = torch.exp(scores(qd, kd, scale) - lse[b][..., None]).masked_fill(~visible(Sq, Sk, causal), 0.0)
        ds = p * (do @ vd.transpose(-1, -2) - (do * od).sum(-1, keepdim=True))
        dq = ds @ kd * scale
        dk = (ds.transpose(-1, -2) @ qd * scale).view(Hk, Hq // Hk, Sk, -1).sum(1)
        dv = (p.transpose(-1, -2) @ do).view(Hk, Hq // Hk, Sk, -1).sum(1)
        grads.append([g.transpose(0, 1) for g in (dq, dk, dv)])
    return [torch.stack([g[i] for g in grads]) for i in range(3)]


@pytest.fixture
def reference_extension(monkeypatch):
    """The eager launches computed on CPU tensors in float64 (the CUDA check relaxed)."""
    from aotriton import _flash_launch, flash

    calls = []

    def fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen, feat=None):
        calls.append(("fwd", v.shape[-1]))
        out, lse, mask = _flash_launch.fwd_outputs(q, k, return_mask, varlen, v)
        ref, ref_lse = _reference(q, k, v, scale, causal)
        out.copy_(ref.detach())
        lse.copy_(ref_lse.detach())
        return out, lse, mask

    def bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat=None,
            deterministic=True):
        calls.append(("bwd", dout.shape[-1], v.shape[-1]))
        grads = _reference_grads(q, k, v, dout, scale, causal)
        return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))

    monkeypatch.setattr(_flash_launch, "fwd", fwd)
    monkeypatch.setattr(_flash_launch, "bwd", bwd)
    monkeypatch.setattr(flash, "_check_qkv", lambda *args: None)
    return calls


def _leaves():
    torch.manual_seed(0)
    q = torch.randn(2, 7, 4, 24, dtype=F32, requires_grad=True)  # GQA: 2 query heads per kv head
    k = torch.randn(2, 9, 2, 24, dtype=F32, requires_grad=True)
    v = torch.randn(2, 9, 2, 16, dtype=F32, requires_grad=True)
    return q, k, v, torch.randn(2, 7, 4, 16, dtype=F32)


def _check_grads(out, grads, q, k, v, dout):
    with torch.enable_grad():
        leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
        ref = _reference(*leaves, 0.25, 2)[0]
        want = torch.autograd.grad(ref, leaves, dout.double())
    assert out.shape == (2, 7, 4, 16) and torch.allclose(out.double(), ref, atol=1e-5)
    for g, w, t in zip(grads, want, (q, k, v)):
        assert g.shape == t.shape and torch.allclose(g.double(), w, atol=1e-5)


def test_eager_autograd(reference_extension):
    q, k, v, dout = _leaves()
    out = aotriton.flash_attn_func(q, k, v, causal=True, softmax_scale=0.25)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    _check_grads(out, grads, q, k, v, dout)
    assert reference_extension == [("fwd", 16), ("bwd", 16, 16)]


def test_compiled_autograd_goes_through_the_ops(reference_extension):
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    graphs = {}

    def recorder(kind):
        def compile_graph(gm, example_inputs):
            graphs[kind] = str(gm.graph)
            return make_boxed_func(gm.forward)
        return compile_graph

    q, k, v, dout = _leaves()
    f = torch.compile(lambda q, k, v: aotriton.flash_attn_func(q, k, v, causal=True, softmax_scale=0.25),
                      backend=aot_autograd(fw_compiler=recorder("fw"), bw_compiler=recorder("bw")), fullgraph=True)
    try:
        out = f(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), dout)
    finally:
        torch._dynamo.reset()
    assert "aotriton.attn_fwd" in graphs["fw"] and "aotriton.attn_bwd" in graphs["bw"]
    _check_grads(out, grads, q, k, v, dout)
    assert reference_extension == [("fwd", 16), ("bwd", 16, 16)]
