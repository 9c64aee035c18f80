"""fused_experts backward kernels under TRITON_INTERPRET=1 against float64 torch
autograd of the MoE MLP (fp16 / fp32: the interpreter's bf16 is wrong)."""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch
import torch.nn.functional as F

from python.jit import moe_bwd as bj  # noqa: E402
from tritonsrc.moe import activation as act_mod  # noqa: E402
from python.jit import moe as mj  # noqa: E402

SMALL = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 2, "num_warps": 4,
         "num_stages": 1}
ACTS = {act_mod.SILU: F.silu, act_mod.GELU: F.gelu, act_mod.GELU_TANH: lambda x: F.gelu(x, approximate="tanh")}


def moe_ref(x, w1, w2, weights, ids, act):
    """Float64 MoE MLP; ids outside [0, E) contribute nothing."""
    E = w1.shape[0]
    out = torch.zeros_like(x)
    for m in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[m, j])
            if 0 <= e < E:
                gate, up = (x[m] @ w1[e].T).chunk(2)
                out[m] = out[m] + weights[m, j] * ((act(gate) * up) @ w2[e].T)
    return out


def ref_grads(x, w1, w2, weights, ids, act, dout):
    leaves = [t.detach().double().requires_grad_() for t in (x, w1, w2, weights)]
    moe_ref(*leaves[:3], leaves[3], ids, act).backward(dout.double())
    return [t.grad for t in leaves]


def make(M, K, N, E, topk, dtype, seed=0, bad_ids=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(M, K, generator=g) * 0.5).to(dtype)
    w1 = (torch.randn(E, 2 * N, K, generator=g) / K ** 0.5).to(dtype)
    w2 = (torch.randn(E, K, N, generator=g) / N ** 0.5).to(dtype)
    weights = torch.rand(M, topk, generator=g) + 0.1
    ids = torch.stack([torch.randperm(E, generator=g)[:topk] for _ in range(M)]).to(torch.int32)
    if bad_ids:
        ids[0, 0] = E  # an expert-parallel sentinel: dropped
        ids[M - 1, topk - 1] = -1
    dout = torch.randn(M, K, generator=g).to(dtype)
    return x, w1, w2, weights, ids, dout


def _check(got, want, dtype, name):
    tol = 2e-2 if dtype == torch.float16 else 1e-4
    err = (got.double() - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= tol * max(scale, 1e-3), f"{name}: max err {err:.3g} vs max |ref| {scale:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,N,E,topk", [(1, 32, 32, 4, 1), (7, 48, 40, 4, 2), (19, 64, 32, 8, 3)])
def test_fused_experts_bwd_matches_float64_autograd(dtype, M, K, N, E, topk):
    x, w1, w2, weights, ids, dout = make(M, K, N, E, topk, dtype)
    got = bj.fused_experts_bwd_jit(dout, x, w1, w2, weights, ids, act_mod.SILU, SMALL)
    want = ref_grads(x, w1, w2, weights, ids, F.silu, dout)
    for name, g, w in zip(("dx", "dw1", "dw2", "dtopk_weights"), got, want):
        assert g.shape == w.shape, name
        _check(g, w, dtype, name)


@pytest.mark.parametrize("activation", [act_mod.GELU, act_mod.GELU_TANH])
def test_fused_experts_bwd_gelu(activation):
    x, w1, w2, weights, ids, dout = make(9, 32, 32, 4, 2, torch.float32, seed=1)
    got = bj.fused_experts_bwd_jit(dout, x, w1, w2, weights, ids, activation, SMALL)
    want = ref_grads(x, w1, w2, weights, ids, ACTS[activation], dout)
    for name, g, w in zip(("dx", "dw1", "dw2", "dtopk_weights"), got, want):
        _check(g, w, torch.float32, name)


def test_fused_experts_bwd_dropped_ids_get_zero_gradient():
    """Ids outside [0, E) (EP sentinels, -1) add nothing: their routing weight's
    gradient is 0 and the other gradients equal the reference's."""
    x, w1, w2, weights, ids, dout = make(6, 32, 32, 4, 2, torch.float32, seed=2, bad_ids=True)
    got = bj.fused_experts_bwd_jit(dout, x, w1, w2, weights, ids, act_mod.SILU, SMALL)
    want = ref_grads(x, w1, w2, weights, ids, F.silu, dout)
    assert got[3][0, 0].item() == 0.0 and got[3][5, 1].item() == 0.0
    for name, g, w in zip(("dx", "dw1", "dw2", "dtopk_weights"), got, want):
        _check(g, w, torch.float32, name)


def test_wgrad_expert_without_tokens_is_zero_and_deterministic():
    """An expert no token picks gets an exact zero gradient (written, not left
    as garbage); two runs give bit-identical weight gradients."""
    x, w1, w2, weights, ids, dout = make(5, 32, 32, 6, 1, torch.float32, seed=3)
    ids[:] = torch.tensor([[0], [2], [2], [5], [0]], dtype=torch.int32)
    a = bj.fused_experts_bwd_jit(dout, x, w1, w2, weights, ids, act_mod.SILU, SMALL)
    b = bj.fused_experts_bwd_jit(dout, x, w1, w2, weights, ids, act_mod.SILU, SMALL)
    for e in (1, 3, 4):
        assert torch.count_nonzero(a[1][e]) == 0 and torch.count_nonzero(a[2][e]) == 0
    assert torch.count_nonzero(a[1][2]) > 0
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_act_and_mul_bwd_in_place_equals_out_of_place():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(5, 2 * 300, generator=g)
    gr = torch.randn(5, 300, generator=g)
    w = torch.rand(5, generator=g)
    dh = torch.empty_like(h)
    a1, dw1 = bj.act_and_mul_bwd(h, gr, w, dh, act_mod.SILU, block=128)
    h2 = h.clone()
    a2, dw2 = bj.act_and_mul_bwd(h2, gr, w, h2, act_mod.SILU, block=128)
    assert torch.equal(dh, h2) and torch.equal(a1, a2) and torch.equal(dw1, dw2)
    # and against autograd of act(gate) * up * w
    hd = h.double().requires_grad_()
    gate, up = hd.chunk(2, dim=1)
    y = F.silu(gate) * up
    (y * w.double()[:, None] * gr.double()).sum().backward()
    assert torch.allclose(dh.double(), hd.grad, atol=1e-5)
    assert torch.allclose(dw1.double(), (y * gr.double()).sum(1), atol=1e-4)
