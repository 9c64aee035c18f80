"""V head dim different from the Q/K head dim (DeepSeek MLA: q/k 192, v 128;
and q/k 128, v 64) through the Python package, forward and backward, against
a float64 reference with the tolerances of the flash forward / backward GPU
tests (test_flash_fwd_gpu.py, test_flash_bwd_gpu.py)."""
import math

import pytest
import torch

from flash_reference import FWD_TOL, GRAD_TOL, LSE_TOL, attention_ref, rel_err

PAIRS = [(192, 128), (128, 64), (256, 128)]  # (q/k head dim, v head dim); 256/128 runs the padded 256 kernel
CAUSAL = ["none", "top_left", "bottom_right"]


def _leaf(*shape, dtype):
    return torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)


def _check_out(out, lse, ref, ref_lse, dtype):
    assert rel_err(out, ref) < FWD_TOL[dtype]
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "rows that see no key must have lse = -inf, only those"
    if finite.any():
        assert ((lse.double() - ref_lse)[finite].abs() / ref_lse[finite].abs().clamp_min(1)).max() < LSE_TOL[dtype]


def _check_grads(grads, refs, dtype):
    for name, got, ref in zip(("dq", "dk", "dv"), grads, refs):
        assert got.shape == ref.shape, name
        if ref.abs().max() == 0:  # no row sees a key
            assert got.abs().max() < 1e-3, name
        else:
            assert rel_err(got, ref) < GRAD_TOL[dtype], name


def _reference(q, k, v, dout, scale, causal):
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out, lse = attention_ref(qd, kd, vd, scale, causal)
    out.backward(dout.double())
    return out.detach(), lse, (qd.grad, kd.grad, vd.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d,dv", PAIRS)
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_batched(dtype, d, dv, causal):
    import aotriton

    torch.manual_seed(d + dv + 7 * causal)
    q, k, v = _leaf(2, 203, 4, d, dtype=dtype), _leaf(2, 113, 2, d, dtype=dtype), _leaf(2, 113, 2, dv, dtype=dtype)
    scale = 1.0 / math.sqrt(d)
    out, lse, _ = aotriton.flash_attn_func(q, k, v, softmax_scale=scale, causal_type=CAUSAL[causal], return_lse=True)
    assert out.shape == (2, 203, 4, dv)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref, ref_lse, ref_grads = _reference(q, k, v, dout, scale, causal)
    _check_out(out, lse, ref, ref_lse, dtype)
    _check_grads(grads, ref_grads, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d,dv", PAIRS[:2])
@pytest.mark.parametrize("causal", [0, 2])
def test_varlen(dtype, d, dv, causal):
    """Per-sequence reference; empty, one-token and seqlen_q > seqlen_k sequences; GQA."""
    import aotriton

    torch.manual_seed(d + dv + causal)
    lens_q, lens_k = [5, 1, 300, 0, 64], [7, 33, 290, 9, 1]
    Hq, Hk = 6, 2
    q = _leaf(sum(lens_q), Hq, d, dtype=dtype)
    k, v = _leaf(sum(lens_k), Hk, d, dtype=dtype), _leaf(sum(lens_k), Hk, dv, dtype=dtype)
    cu_q = torch.tensor([0] + torch.tensor(lens_q).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + torch.tensor(lens_k).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    scale = d ** -0.5
    out, lse, _ = aotriton.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=causal == 2,
                                                  return_lse=True)
    assert out.shape == (sum(lens_q), Hq, dv)
    dout = torch.randn_like(out)
    dq, dk, dvg = torch.autograd.grad(out, (q, k, v), dout)
    for b in range(len(lens_q)):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        if lens_q[b] == 0:
            continue
        ref, ref_lse, refs = _reference(q[None, qs], k[None, ks], v[None, ks], dout[None, qs], scale, causal)
        _check_out(out[None, qs], lse[None, :, qs], ref, ref_lse, dtype)
        _check_grads((dq[None, qs], dk[None, ks], dvg[None, ks]), refs, dtype)


@pytest.mark.parametrize("d,dv", PAIRS[:2])
def test_sdpa_layout(d, dv):
    """SDPA's (B, H, S, D) views, value with its own head dim, causal top-left."""
    import aotriton

    torch.manual_seed(d)
    q = torch.randn(2, 4, 130, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 4, 150, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(2, 4, 150, dv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = aotriton.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.shape == (2, 4, 130, dv)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref, _, refs = _reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dout.transpose(1, 2),
                              d ** -0.5, 1)
    assert rel_err(out.transpose(1, 2), ref) < FWD_TOL[torch.bfloat16]
    _check_grads([g.transpose(1, 2) for g in grads], refs, torch.bfloat16)


def _guarded(shape, dtype, guard=8):
    """NaN tensor whose rows are `guard` columns wider: (view, guard columns)."""
    full = torch.full(shape[:-1] + (shape[-1] + guard,), float("nan"), device="cuda", dtype=dtype)
    return full[..., :shape[-1]], full[..., shape[-1]:]


@pytest.mark.parametrize("d,dv", PAIRS[:2])
def test_outputs_written_exactly(d, dv):
    """NaN-poisoned out / dq / dk / dv with guard columns after V's head dim,
    through the binding: every element written, nothing past the head dims."""
    import pyaotriton as C
    from aotriton._glue import view

    torch.manual_seed(dv)
    B, Sq, Sk, Hq, Hk = 2, 77, 91, 4, 4
    q, k = (torch.randn(B, S, H, d, device="cuda", dtype=torch.float16) for S, H in ((Sq, Hq), (Sk, Hk)))
    v = torch.randn(B, Sk, Hk, dv, device="cuda", dtype=torch.float16)
    out, out_guard = _guarded((B, Sq, Hq, dv), torch.float16)
    lse = torch.full((B, Hq, Sq), float("nan"), device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    scale = d ** -0.5
    C.attn_fwd(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"), scale, 2, 0.0, 0, 0,
               None, stream)
    dout = torch.randn_like(out)
    dq, dk = torch.full_like(q, float("nan")), torch.full_like(k, float("nan"))
    dv_out, dv_guard = _guarded(v.shape, torch.float16)
    delta = torch.full_like(lse, float("nan"))
    C.attn_bwd(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(dout, "dout"), view(lse, "lse"),
               view(dq, "dq"), view(dk, "dk"), view(dv_out, "dv"), view(delta, "delta"), scale, 2, 0.0, 0, 0, stream)
    torch.cuda.synchronize()
    assert torch.isnan(out_guard).all() and torch.isnan(dv_guard).all(), "written past V's head dim"
    ref, ref_lse, refs = _reference(q, k, v, dout, scale, 2)
    _check_out(out, lse, ref, ref_lse, torch.float16)
    _check_grads((dq, dk, dv_out), refs, torch.float16)
    torch.testing.assert_close(delta.double(), (dout.double() * out.double()).sum(-1).transpose(1, 2),
                               atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("kwargs, what", [
    (dict(d=192, dv=96), "v head dim 96 with q/k head dim 192"),
    (dict(d=96, dv=64), "v head dim 64 with q/k head dim 96"),
    (dict(d=192, dv=128, dtype=torch.float32), "in fp32"),
    (dict(d=192, dv=128, dropout_p=0.1), "with dropout"),
    (dict(d=192, dv=128, window_size=(32, 0)), "with sliding window, softcap or ALiBi"),
])
def test_unsupported_pairs_raise(kwargs, what):
    import aotriton

    kw = dict(kwargs)
    d, dv, dtype = kw.pop("d"), kw.pop("dv"), kw.pop("dtype", torch.float16)
    q, k = (torch.randn(1, 33, 2, d, device="cuda", dtype=dtype) for _ in range(2))
    v = torch.randn(1, 33, 2, dv, device="cuda", dtype=dtype)
    with pytest.raises(ValueError, match="supported: q/k head dim 128 with v head dim 64") as e:
        aotriton.flash_attn_func(q, k, v, causal=True, **kw)
    assert what in str(e.value)
