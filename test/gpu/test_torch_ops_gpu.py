"""The torch custom ops on the GPU: torch.library.opcheck for every op, autograd
against a float64 reference, torch.compile(fullgraph=True) and torch.export of
a small transformer block against eager, CUDA graphs (including a first call
inside the capture, in a fresh process), drop-in keywords and device errors."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from flash_reference import attention_ref, rel_err
from testenv import PY_DIR

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")

DEV = "cuda"
F16, BF16, F32, I32, I64 = torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.int64
GRAD_TOL = {F16: 1e-2, BF16: 4e-2}


@pytest.fixture(autouse=True)
def _reset_dynamo():
    yield
    torch._dynamo.reset()


def rnd(*shape, dtype=F16, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(dtype)


def fp8_ok():
    return torch.cuda.get_device_capability() >= (8, 9)


def ref_moe(x, w1, w2, weights, ids):
    """float64 fused MoE with silu: sum_k w * (silu(x W1g^T) * x W1u^T) W2^T."""
    N = w2.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float64, device=DEV)
    for m in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[m, j])
            h = x[m].double() @ w1[e].double().T
            a = torch.nn.functional.silu(h[:N]) * h[N:]
            out[m] += weights[m, j].double() * (a @ w2[e].double().T)
    return out


# --- opcheck ------------------------------------------------------------------------------------
def _flash_args(dropout):
    q = rnd(2, 33, 4, 64).requires_grad_()
    k, v = rnd(2, 47, 2, 64).requires_grad_(), rnd(2, 47, 2, 64).requires_grad_()
    seed = offset = None
    if dropout:
        seed, offset = torch.tensor([1234], dtype=I64, device=DEV), torch.tensor([0], dtype=I64, device=DEV)
    return q, k, v, seed, offset


def _opcheck_cases():
    cases = {}
    for dropout in (False, True):
        q, k, v, seed, offset = _flash_args(dropout)
        p = 0.2 if dropout else 0.0
        cases[f"attn_fwd-dropout{dropout}"] = ("attn_fwd", (q, k, v, seed, offset, 0.125, 2, p, dropout, None))
        out, lse, _ = aotriton.flash_attn_func(q.detach(), k.detach(), v.detach(), p, 0.125, True, return_lse=True,
                                               philox=(seed, offset) if dropout else None)
        cases[f"attn_bwd-dropout{dropout}"] = ("attn_bwd", (rnd(*q.shape), q.detach(), k.detach(), v.detach(), out,
                                                            lse, seed, offset, 0.125, 2, p, None))
    cu_q = torch.tensor([0, 17, 40], dtype=I32, device=DEV)
    cu_k = torch.tensor([0, 9, 30], dtype=I32, device=DEV)
    qv, kv, vv = rnd(40, 4, 64).requires_grad_(), rnd(30, 2, 64).requires_grad_(), rnd(30, 2, 64).requires_grad_()
    cases["attn_fwd_varlen"] = ("attn_fwd_varlen", (qv, kv, vv, cu_q, cu_k, None, None, 23, 21, 0.125, 1, 0.0, False,
                                                    None))
    out, lse = aotriton.flash_attn_varlen_func(qv.detach(), kv.detach(), vv.detach(), cu_q, cu_k, 23, 21,
                                               causal_type="top_left", return_attn_probs=True)[:2]
    cases["attn_bwd_varlen"] = ("attn_bwd_varlen", (rnd(40, 4, 64), qv.detach(), kv.detach(), vv.detach(), out, lse,
                                                    cu_q, cu_k, None, None, 23, 21, 0.125, 1, 0.0, None))
    x = rnd(7, 256)
    cases["act_and_mul"] = ("act_and_mul", (torch.empty(7, 128, dtype=F16, device=DEV), x, 0, None))
    cases["moe_sum"] = ("moe_sum", (torch.empty(7, 96, dtype=F16, device=DEV), rnd(7, 2, 96), None))
    cases["topk_softmax"] = ("topk_softmax", (torch.empty(7, 2, device=DEV), torch.empty(7, 2, dtype=I32, device=DEV),
                                              rnd(7, 8), True, None))
    w, ids = aotriton.topk_softmax(rnd(7, 8), 2, True)
    s, e, n = aotriton.moe_align_block_size(ids, 16, 8)
    cases["moe_align_block_size"] = ("moe_align_block_size", (torch.empty_like(s), torch.empty_like(e),
                                                              torch.empty_like(n), ids, 8, 16, None, None))
    A, B = rnd(7, 128), rnd(8, 64, 128, scale=0.1)
    cases["grouped_gemm"] = ("grouped_gemm", (torch.zeros(14, 64, dtype=F16, device=DEV), A, B, w.reshape(-1, 1), s,
                                              e, n, None, None, 2, 16, True, 0, None))
    if fp8_ok():
        xq = rnd(5, 256)
        cases["per_token_group_quant_fp8"] = ("per_token_group_quant_fp8", (
            torch.empty(5, 256, dtype=torch.float8_e4m3fn, device=DEV), torch.empty(5, 2, device=DEV), xq, 128))
        cases["per_tensor_quant_fp8"] = ("per_tensor_quant_fp8", (
            torch.empty(5, 256, dtype=torch.float8_e4m3fn, device=DEV), torch.empty(1, device=DEV), xq, True))
    w1, w2 = rnd(8, 256, 128, scale=0.1), rnd(8, 128, 128, scale=0.1)
    h = rnd(7, 128)
    cases["fused_experts"] = ("fused_experts", (torch.empty_like(h), h, w1, w2, w, ids, None, 0, 0, None, None, None,
                                                None, None, 0, None))
    return cases


OPCHECK_CASES = ["attn_fwd-dropoutFalse", "attn_fwd-dropoutTrue", "attn_bwd-dropoutFalse", "attn_bwd-dropoutTrue",
                 "attn_fwd_varlen", "attn_bwd_varlen", "act_and_mul", "moe_sum", "topk_softmax",
                 "moe_align_block_size", "grouped_gemm", "per_token_group_quant_fp8", "per_tensor_quant_fp8",
                 "fused_experts"]


@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck(case):
    torch.manual_seed(0)
    cases = _opcheck_cases()
    if case not in cases:
        pytest.skip("fp8 quantization needs sm_89+")
    name, args = cases[case]
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args):
        # torch's schema check compares mutated tensors with arithmetic fp8
        # has no CUDA kernel for ("mul_cuda" not implemented for Float8_e4m3fn);
        # the other three checks still run, the mutation annotation included.
        utils = utils[1:]
    torch.library.opcheck(getattr(torch.ops.aotriton, name).default, args, test_utils=utils)


# --- autograd -----------------------------------------------------------------------------------
def _grads_ref(q, k, v, dout, scale, causal_code, keep=None, p=0.0):
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, _ = attention_ref(qd, kd, vd, scale, causal_code, keep, p)
    out.backward(dout.double())
    return out, qd.grad, kd.grad, vd.grad


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("compiled", [False, True])
def test_autograd_matches_reference(dtype, compiled):
    torch.manual_seed(1)
    q, k, v = rnd(2, 77, 8, 64, dtype=dtype), rnd(2, 91, 2, 64, dtype=dtype), rnd(2, 91, 2, 64, dtype=dtype)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    dout = rnd(2, 77, 8, 64, dtype=dtype)

    def f(q, k, v):
        return aotriton.flash_attn_func(q, k, v, causal=True)
    fn = torch.compile(f, fullgraph=True) if compiled else f
    out = fn(q, k, v)
    out.backward(dout)
    ref, dq, dk, dv = _grads_ref(q, k, v, dout, 64 ** -0.5, 2)
    assert rel_err(out, ref) < GRAD_TOL[dtype]
    for got, want in ((q.grad, dq), (k.grad, dk), (v.grad, dv)):
        assert rel_err(got, want) < GRAD_TOL[dtype]


def test_dropout_mask_and_force_config_keep_autograd():
    import pyaotriton
    from aotriton._glue import stream_of, view

    torch.manual_seed(2)
    q, k, v = (rnd(1, 64, 4, 64).requires_grad_() for _ in range(3))
    dout = rnd(1, 64, 4, 64)
    philox = aotriton.philox_state(DEV, seed=7)
    out, mask = aotriton.flash_attn_func(q, k, v, 0.25, return_dropout_mask=True, philox=philox)
    assert out.grad_fn is not None and mask.dtype == torch.int8
    out.backward(dout)
    ref, dq, dk, dv = _grads_ref(q, k, v, dout, 64 ** -0.5, 0, mask.bool(), 0.25)
    assert rel_err(out, ref) < 1e-2
    for got, want in ((q.grad, dq), (k.grad, dk), (v.grad, dv)):
        assert rel_err(got, want) < 1e-2
    # force_config names a forward config: the output stays differentiable
    qd = q.detach()
    lse = torch.empty(1, 4, 64, device=DEV)
    cfg = pyaotriton.attn_fwd(view(qd, "q"), view(qd, "k"), view(qd, "v"), view(torch.empty_like(qd), "o"),
                              view(lse, "lse"), 0.125, 0, 0.0, 0, 0, None, stream_of(qd), None)
    q.grad = None
    out = aotriton.flash_attn_func(q, k, v, force_config=cfg)
    assert out.grad_fn is not None
    out.backward(dout)
    ref, dq, _, _ = _grads_ref(q, k, v, dout, 64 ** -0.5, 0)
    assert rel_err(q.grad, dq) < 1e-2


def test_deterministic_and_return_attn_probs():
    torch.manual_seed(3)
    q, k, v = (rnd(2, 130, 4, 96, dtype=BF16).requires_grad_() for _ in range(3))
    dout = rnd(2, 130, 4, 96, dtype=BF16)
    grads = []
    for _ in range(2):
        out = aotriton.flash_attn_func(q, k, v, causal=True, deterministic=True)
        grads.append(torch.autograd.grad(out, (q, k, v), dout))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    out, lse, probs = aotriton.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert probs is None and lse.shape == (2, 4, 130) and out.grad_fn is not None
    q16, k16, v16 = (rnd(2, 130, 4, 64).requires_grad_() for _ in range(3))  # dropout: fp16 D=64 in every profile
    out, lse, probs = aotriton.flash_attn_func(q16, k16, v16, 0.3, return_attn_probs=True)
    kept = probs.float().mean().item()
    assert probs.shape == (2, 4, 130, 130) and 0.6 < kept < 0.8 and out.grad_fn is not None


def test_sdpa_matches_torch():
    torch.manual_seed(4)
    q, k, v = rnd(2, 8, 100, 64), rnd(2, 2, 120, 64), rnd(2, 2, 120, 64)
    out = aotriton.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.1, enable_gqa=True)
    kr, vr = k.double().repeat_interleave(4, 1), v.double().repeat_interleave(4, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), kr, vr, is_causal=True, scale=0.1)
    assert rel_err(out, ref) < 4e-3
    with pytest.raises(NotImplementedError, match="attn_mask"):
        aotriton.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(100, 120, dtype=torch.bool, device=DEV))


# --- torch.compile / torch.export over a transformer block ---------------------------------------
class Block(torch.nn.Module):
    """Attention (aotriton, causal, GQA-free) + a fused-MoE MLP, residuals around both."""

    def __init__(self, heads=4, head_dim=64, experts=8, inter=128, topk=2, moe=True):
        super().__init__()
        self.heads, self.head_dim, self.topk, self.moe = heads, head_dim, topk, moe
        hidden = heads * head_dim
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.proj = torch.nn.Linear(hidden, hidden)
        self.gate = torch.nn.Linear(hidden, experts)
        self.w1 = torch.nn.Parameter(torch.randn(experts, 2 * inter, hidden) / hidden ** 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(experts, hidden, inter) / inter ** 0.5)

    def forward(self, x):
        B, S, hidden = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, self.head_dim).unbind(2)
        h = x + self.proj(aotriton.flash_attn_func(q, k, v, causal=True).reshape(B, S, hidden))
        if not self.moe:
            return h
        t = h.reshape(-1, hidden)
        return h + aotriton.fused_moe(t, self.w1, self.w2, self.gate(t), self.topk, True).view_as(h)


def test_compile_fullgraph_block_matches_eager():
    torch.manual_seed(5)
    block = Block().to(DEV, BF16)
    x = rnd(2, 48, 256, dtype=BF16)
    with torch.no_grad():
        want = block(x)
        got = torch.compile(block, fullgraph=True)(x)
    assert rel_err(got, want.double()) < 1e-2


def test_compile_fullgraph_attention_forward_backward_matches_eager():
    torch.manual_seed(6)
    block = Block(moe=False).to(DEV, F16)
    x = rnd(2, 40, 256).requires_grad_()
    dy = rnd(2, 40, 256)
    eager_out = block(x)
    eager = torch.autograd.grad(eager_out, [x, block.qkv.weight], dy)
    comp_out = torch.compile(block, fullgraph=True)(x)
    comp = torch.autograd.grad(comp_out, [x, block.qkv.weight], dy)
    assert rel_err(comp_out, eager_out.double()) < 1e-2
    for a, b in zip(comp, eager):
        assert rel_err(a, b.double()) < 2e-2


def test_export_block_matches_eager():
    torch.manual_seed(7)
    block = Block().to(DEV, F16).eval()
    x = rnd(2, 32, 256)
    with torch.no_grad():
        for p in block.parameters():
            p.requires_grad_(False)
        ep = torch.export.export(block, (x,))
        calls = [n for n in ep.graph.nodes if n.op == "call_function"]
        # a mutating op may also appear functionalized, as an argument of auto_functionalized
        targets = {str(n.target) for n in calls} | {str(a) for n in calls for a in n.args
                                                     if isinstance(a, torch._ops.OpOverload)}
        assert any("aotriton.attn_fwd" in t for t in targets), targets
        assert any("aotriton.fused_experts" in t for t in targets), targets
        x2 = rnd(2, 32, 256)
        assert rel_err(ep.module()(x2), block(x2).double()) < 1e-2


def test_compile_dropout_matches_eager_with_same_philox():
    torch.manual_seed(8)
    q, k, v = (rnd(1, 70, 4, 64).requires_grad_() for _ in range(3))
    philox = aotriton.philox_state(DEV, seed=99)

    def f(q, k, v):
        return aotriton.flash_attn_func(q, k, v, 0.2, philox=philox)
    dout = rnd(1, 70, 4, 64)
    e_out = f(q, k, v)
    e = torch.autograd.grad(e_out, (q, k, v), dout)
    c_out = torch.compile(f, fullgraph=True)(q, k, v)
    c = torch.autograd.grad(c_out, (q, k, v), dout)
    assert torch.equal(c_out, e_out)
    for a, b in zip(c, e):
        assert torch.equal(a, b)


# --- CUDA graphs ----------------------------------------------------------------------------------
def test_cuda_graph_forward_backward_replays():
    torch.manual_seed(9)
    q, k, v = (rnd(2, 64, 4, 64).requires_grad_() for _ in range(3))
    dout = rnd(2, 64, 4, 64)
    philox = aotriton.philox_state(DEV, seed=5)

    def step():
        out = aotriton.flash_attn_func(q, k, v, 0.1, causal=True, philox=philox)
        return (out,) + torch.autograd.grad(out, (q, k, v), dout)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()  # warm-up (autograd and the allocator, as torch recommends)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static = step()
    with torch.no_grad():
        for t in (q, k, v, dout):
            t.copy_(torch.randn_like(t))
    g.replay()
    torch.cuda.synchronize()
    for got, want in zip(static, step()):
        assert torch.equal(got, want)


@pytest.mark.parametrize("path", ["python", "cxx"])
def test_inference_lse_buffer_survives_growth_and_graph_replay(path, monkeypatch):
    """No-grad eager calls write their unused LSE into one shared buffer (the
    Python layer's, or the torch C++ fast path's): a graph captured before the
    buffer grows must still replay correctly and must not overwrite memory
    allocated after the growth."""
    from aotriton import _glue, _torch_fast

    if path == "python":
        monkeypatch.setattr(_torch_fast, "attn_fwd_plain", None)
        buffer_numel = lambda: _glue._discard[torch.cuda.current_device()][0]  # noqa: E731
    elif _torch_fast.ext is None:
        pytest.skip(f"torch C++ fast path: {_torch_fast.status}")
    else:
        buffer_numel = lambda: _torch_fast.ext.discard_numel(torch.cuda.current_device())  # noqa: E731
    torch.manual_seed(12)
    small = [rnd(1, 48, 4, 64) for _ in range(3)]
    g = torch.cuda.CUDAGraph()
    with torch.no_grad():
        aotriton.flash_attn_func(*small, causal=True)  # warm-up outside the capture
        with torch.cuda.graph(g):
            static = aotriton.flash_attn_func(*small, causal=True)
        before = buffer_numel()
        assert before > 0
        # Grows the buffer past the captured one, however large earlier tests in this process left it.
        seqlen = max(4096, before // (4 * 8) + 1)
        big = [rnd(4, seqlen, 8, 64) for _ in range(3)]
        out_big = aotriton.flash_attn_func(*big, causal=True)
        assert buffer_numel() > before
        sentinel = torch.full((1 << 20,), 7.0, device=DEV)  # may reuse freed memory, if any was freed
        for t in small:
            t.copy_(torch.randn_like(t))
        g.replay()
        torch.cuda.synchronize()
    want, _ = attention_ref(*small, 64 ** -0.5, 2)
    assert rel_err(static, want) < 4e-3
    assert torch.equal(sentinel, torch.full_like(sentinel, 7.0))
    want_big, _ = attention_ref(*(t[:1, :512] for t in big), 64 ** -0.5, 2)
    assert rel_err(out_big[:1, :512], want_big) < 4e-3


def test_cuda_graph_fused_moe_replays():
    torch.manual_seed(10)
    E, N, K, M, topk = 8, 128, 256, 5, 2
    w1, w2 = rnd(E, 2 * N, K, dtype=BF16, scale=0.06), rnd(E, K, N, dtype=BF16, scale=0.09)
    x, logits = rnd(M, K, dtype=BF16), rnd(M, E, dtype=BF16)
    aotriton.fused_moe(x, w1, w2, logits, topk, True)  # warm-up outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = aotriton.fused_moe(x, w1, w2, logits, topk, True)
    x.copy_(torch.randn_like(x))
    logits.copy_(torch.randn_like(logits))
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    w, ids = aotriton.topk_softmax(logits, topk, True)
    assert rel_err(out, ref_moe(x, w1, w2, w, ids)) < 2e-2


FIRST_CALL_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import aotriton
    torch.manual_seed(0)
    dev = "cuda"
    q, k, v = (torch.randn(1, 80, 4, 128, device=dev, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    dout = torch.randn(1, 80, 4, 128, device=dev, dtype=torch.bfloat16)
    E, N, K = 8, 128, 256
    w1 = torch.randn(E, 2 * N, K, device=dev, dtype=torch.bfloat16) * 0.06
    w2 = torch.randn(E, K, N, device=dev, dtype=torch.bfloat16) * 0.09
    x, logits = torch.randn(3, K, device=dev, dtype=torch.bfloat16), torch.randn(3, E, device=dev, dtype=torch.bfloat16)
    if sys.argv[1] == "preload":
        n = aotriton.preload(dtypes=(torch.bfloat16,), head_dims=(128,), moe_shapes=[(E, N, K, 2)],
                             causal_types=("bottom_right",))
        assert n > 0, "preload loaded nothing"
    # torch's own lazy state (autograd's device thread) is set up outside the capture
    (torch.ones(1, device=dev, requires_grad=True) * 2).sum().backward()
    torch.cuda.synchronize()
    before = aotriton.module_load_count()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = aotriton.flash_attn_func(q, k, v, causal=True)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        moe = aotriton.fused_moe(x, w1, w2, logits, 2, True)
    loads = aotriton.module_load_count() - before
    g.replay()
    torch.cuda.synchronize()
    out2 = aotriton.flash_attn_func(q, k, v, causal=True)
    grads2 = torch.autograd.grad(out2, (q, k, v), dout)
    moe2 = aotriton.fused_moe(x, w1, w2, logits, 2, True)
    torch.cuda.synchronize()
    assert torch.equal(out, out2) and torch.equal(moe, moe2)
    # (On sm_90 dQ is summed with atomics, but 80 keys are one key block: one add per element, same bits.)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2))
    print("LOADS_IN_CAPTURE", loads)
""")


@pytest.mark.parametrize("mode", ["first_call_in_capture", "preload"])
def test_cuda_graph_first_call_in_fresh_process(mode):
    r = subprocess.run([sys.executable, "-c", FIRST_CALL_SCRIPT, mode], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           p for p in (str(PY_DIR), os.environ.get("PYTHONPATH")) if p)})
    assert r.returncode == 0, r.stdout + r.stderr
    loads = int(r.stdout.split("LOADS_IN_CAPTURE")[1].split()[0])
    if mode == "preload":
        assert loads == 0, "preload left modules to load inside the capture"
    else:
        assert loads > 0, "the capture was not the first use"


# --- drop-in MoE keywords, gradients refused, device errors -----------------------------------------
def test_fused_experts_vllm_keywords():
    torch.manual_seed(11)
    E, N, K, M = 8, 128, 256, 6
    w1, w2 = rnd(E, 2 * N, K, scale=0.06), rnd(E, K, N, scale=0.09)
    x = rnd(M, K)
    w, ids = aotriton.topk_softmax(rnd(M, E), 2, True)
    want = ref_moe(x, w1, w2, w, ids)
    y = x.clone()
    assert aotriton.fused_experts(y, w1, w2, w, ids, inplace=True, global_num_experts=E) is y
    assert rel_err(y, want) < 1e-2
    w1v, idsv = aotriton.topk_softmax(rnd(M, E), 1, False)
    got = aotriton.fused_experts(x, w1, w2, w1v, idsv, apply_router_weight_on_input=True)
    ones = torch.ones_like(w1v)
    assert rel_err(got, ref_moe((x.double() * w1v.double()).to(F16), w1, w2, ones, idsv)) < 1e-2

    def route(hidden_states, gating_output, topk, renormalize):
        return w, ids.long()
    got = aotriton.fused_moe(x, w1, w2, rnd(M, E), 2, True, custom_routing_function=route)
    assert rel_err(got, want) < 1e-2
    # fused_experts is differentiable (test_moe_bwd_gpu.py); its backward takes no expert map.
    with pytest.raises(NotImplementedError, match="expert_map"):
        aotriton.fused_experts(x, w1.clone().requires_grad_(), w2, w, ids,
                               expert_map=torch.arange(E, dtype=torch.int32, device=x.device))
    with pytest.raises(NotImplementedError, match="no backward"):
        aotriton.silu_and_mul(rnd(4, 64).requires_grad_())


def test_device_errors_launch_nothing():
    q = rnd(1, 16, 2, 64)
    with pytest.raises(ValueError, match="k must be a CUDA tensor"):
        aotriton.flash_attn_func(q, q.cpu(), q)
    with pytest.raises(ValueError, match="philox seed must be an int64"):
        aotriton.flash_attn_func(q, q, q, 0.1, philox=(torch.zeros(1, dtype=I32, device=DEV),
                                                       torch.zeros(1, dtype=I64, device=DEV)))
    with pytest.raises(ValueError, match="philox offset must be a CUDA tensor"):
        aotriton.flash_attn_func(q, q, q, 0.1, philox=(torch.zeros(1, dtype=I64, device=DEV),
                                                       torch.zeros(1, dtype=I64)))
    cu = torch.tensor([0, 16], dtype=I32)
    with pytest.raises(ValueError, match="cu_seqlens_q must be a CUDA tensor"):
        aotriton.flash_attn_varlen_func(q[0], q[0], q[0], cu, cu.to(DEV), 16, 16)
    with pytest.raises(ValueError, match="w2 must be a CUDA tensor"):
        aotriton.fused_experts(rnd(2, 64), rnd(4, 64, 64), torch.randn(4, 64, 32, dtype=F16), torch.ones(2, 1),
                               torch.zeros(2, 1, dtype=I32, device=DEV))
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="v is on cuda:1 but q is on cuda:0"):
            aotriton.flash_attn_func(q, q, q.to("cuda:1"))
        with pytest.raises(ValueError, match="out is on cuda:1"):
            aotriton.silu_and_mul(rnd(4, 64), torch.empty(4, 32, dtype=F16, device="cuda:1"))
    torch.cuda.synchronize()  # the context is alive: nothing bad was launched
