"""Flash attention backward (autograd and standalone) vs float64 torch autograd."""
import math

import pytest
import torch

from flash_reference import GRAD_TOL, attention_ref, rel_err



def make(shape, dtype, layout="bshd"):
    if layout == "bshd":
        return torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)
    B, S, H, D = shape
    return torch.randn(B, H, S, D, device="cuda", dtype=dtype).transpose(1, 2).detach().requires_grad_(True)


def ref_grads(q, k, v, dout, scale, causal, keep=None, p=0.0):
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out, _ = attention_ref(qd, kd, vd, scale, causal, keep=keep, dropout_p=p)
    out.backward(dout.double())
    return out, qd.grad, kd.grad, vd.grad


def check_grads(q, k, v, causal, dtype, p=0.0, philox=None, keep=None):
    import aotriton

    scale = 1.0 / math.sqrt(q.shape[-1])
    out = aotriton.flash_attn_func(q, k, v, p, scale, causal_type=["none", "top_left", "bottom_right"][causal],
                                   philox=philox)
    dout = torch.randn_like(out)
    out.backward(dout)
    _, rq, rk, rv = ref_grads(q, k, v, dout, scale, causal, keep, p)
    for name, got, ref in (("dq", q.grad, rq), ("dk", k.grad, rk), ("dv", v.grad, rv)):
        if ref.abs().max() == 0:  # e.g. one key: dq is exactly 0, ours is 0 up to rounding
            assert got.abs().max() < 1e-3, name
        else:
            assert rel_err(got, ref) < GRAD_TOL[dtype], name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [16, 40, 64, 72, 111, 128, 256])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_head_dims_and_causal(dtype, D, causal):
    torch.manual_seed(D + causal)
    q, k, v = make((2, 150, 4, D), dtype), make((2, 97, 2, D), dtype), make((2, 97, 2, D), dtype)
    check_grads(q, k, v, causal, dtype)


@pytest.mark.parametrize("Sq,Sk", [(1, 1), (17, 113), (113, 17), (203, 203), (1023, 257)])
@pytest.mark.parametrize("causal", [0, 2])
def test_seqlens(Sq, Sk, causal):
    torch.manual_seed(Sq * 3 + Sk)
    q, k, v = make((1, Sq, 4, 64), torch.float16), make((1, Sk, 4, 64), torch.float16), make((1, Sk, 4, 64),
                                                                                             torch.float16)
    check_grads(q, k, v, causal, torch.float16)


@pytest.mark.parametrize("Hq,Hk", [(8, 2), (6, 1)])
@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_gqa_and_layouts(Hq, Hk, layout):
    torch.manual_seed(Hq + Hk)
    q = make((2, 130, Hq, 128), torch.bfloat16, layout)
    k, v = make((2, 200, Hk, 128), torch.bfloat16, layout), make((2, 200, Hk, 128), torch.bfloat16, layout)
    check_grads(q, k, v, 1, torch.bfloat16)


def test_fp32():
    torch.manual_seed(2)
    q, k, v = (make((1, 45, 2, 32), torch.float32) for _ in range(3))
    check_grads(q, k, v, 2, torch.float32)


def test_dropout_uses_forward_mask():
    import aotriton

    torch.manual_seed(8)
    q, k, v = (make((2, 129, 2, 64), torch.float16) for _ in range(3))
    p = 0.25
    philox = aotriton.philox_state(q.device, seed=42)
    _, mask = aotriton.flash_attn_func(q.detach(), k.detach(), v.detach(), p, causal=True, philox=philox,
                                       return_dropout_mask=True)
    check_grads(q, k, v, 2, torch.float16, p=p, philox=philox, keep=mask.bool())


def test_varlen_matches_per_sequence_reference():
    import aotriton

    torch.manual_seed(12)
    lens_q, lens_k = [5, 1, 200, 33], [9, 40, 180, 1]
    Hq, Hk, D = 4, 2, 64
    q = torch.randn(sum(lens_q), Hq, D, device="cuda", dtype=torch.float16, requires_grad=True)
    k = torch.randn(sum(lens_k), Hk, D, device="cuda", dtype=torch.float16, requires_grad=True)
    v = torch.randn(sum(lens_k), Hk, D, device="cuda", dtype=torch.float16, requires_grad=True)
    cu_q = torch.tensor([0] + torch.tensor(lens_q).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + torch.tensor(lens_k).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    out = aotriton.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    for b in range(len(lens_q)):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        _, rq, rk, rv = ref_grads(q[None, qs], k[None, ks], v[None, ks], dout[None, qs], D ** -0.5, 2)
        for got, ref in ((q.grad[qs], rq[0]), (k.grad[ks], rk[0]), (v.grad[ks], rv[0])):
            if ref.abs().max() == 0:
                assert got.abs().max() < 1e-3
            else:
                assert rel_err(got, ref) < GRAD_TOL[torch.float16]


def test_deterministic_and_standalone():
    import aotriton

    torch.manual_seed(21)
    q = torch.randn(2, 1000, 8, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 1000, 2, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out, lse, _ = aotriton.flash_attn_func(q, k, v, causal=True, return_lse=True)
    dout = torch.randn_like(out)
    # deterministic=True: bit-identical run to run on every GPU (the default
    # may sum dQ with atomics on sm_90: test_flash_hopper_bwd_gpu.py).
    g1 = aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=True, deterministic=True)
    g2 = aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=True, deterministic=True)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b), "backward must be bit-identical run to run"


def test_backward_bad_input():
    import aotriton

    q = torch.randn(1, 16, 2, 64, device="cuda", dtype=torch.float16)
    out, lse, _ = aotriton.flash_attn_func(q, q, q, return_lse=True)
    with pytest.raises(ValueError, match="lse"):
        aotriton.flash_attn_backward(out, q, q, q, out, lse[:, :1])
    with pytest.raises(ValueError, match="philox"):
        aotriton.flash_attn_backward(out, q, q, q, out, lse, dropout_p=0.1)
