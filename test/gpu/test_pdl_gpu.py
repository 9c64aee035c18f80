"""Programmatic dependent launch (aotriton.set_programmatic_dependent_launch) on the
GPU: the decode chains give bitwise the results they give without it, also when a
torch kernel writes their input right before them in the stream, when the next
torch kernel reads their output at once, and inside a CUDA graph replayed over
fresh inputs (every kernel of a chain must wait for its predecessor's writes:
a missing wait shows up as a stale or torn input). sm_90 only (the kernels carry
griddepcontrol.wait there; elsewhere the switch changes nothing)."""
import pytest
import torch
from test_moe_fused_gpu import aot  # a functional the build's profile lacks skips the test

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")

DEV = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                                reason="programmatic dependent launch needs sm_90+")


@pytest.fixture
def pdl():
    was = aotriton.programmatic_dependent_launch()
    yield aotriton.set_programmatic_dependent_launch
    aotriton.set_programmatic_dependent_launch(was)


def moe_case(M, quant, gen):
    E, topk, K, N = 8, 2, 512, 1024
    w1 = torch.randn(E, 2 * N, K, device=DEV, generator=gen) / K ** 0.5
    w2 = torch.randn(E, K, N, device=DEV, generator=gen) / N ** 0.5
    kw = {}
    if quant == "fp8":
        s1, s2 = w1.abs().amax((1, 2)) / 448, w2.abs().amax((1, 2)) / 448
        w1, w2 = (w1 / s1[:, None, None]).to(torch.float8_e4m3fn), (w2 / s2[:, None, None]).to(torch.float8_e4m3fn)
        kw = dict(use_fp8_w8a8=True, w1_scale=s1, w2_scale=s2)  # dynamic per-tensor activation scales
    else:
        w1, w2 = w1.half(), w2.half()
    ids = torch.rand(M, E, device=DEV, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
    w = torch.rand(M, topk, device=DEV, generator=gen) + 0.1
    x = torch.empty(M, K, device=DEV, dtype=torch.float16)
    out = torch.empty_like(x)
    ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8, device=DEV)
    return x, (lambda: aot(aotriton.fused_experts, x, w1, w2, w, ids, out=out, workspace=ws, **kw)), out


def decode_case(B, ctx, gen):
    hq, hk, d, page = 8, 2, 128, 64
    blocks = B * ctx // page
    k_cache = torch.randn(blocks, page, hk, d, device=DEV, generator=gen).half()
    v_cache = torch.randn(blocks, page, hk, d, device=DEV, generator=gen).half()
    table = torch.randperm(blocks, device=DEV, generator=gen).view(B, ctx // page).to(torch.int32)
    cs = torch.full((B,), ctx, dtype=torch.int32, device=DEV)
    q = torch.empty(B, 1, hq, d, device=DEV, dtype=torch.float16)
    out = torch.empty_like(q)

    def call():
        out.copy_(aot(aotriton.flash_attn_with_kvcache, q, k_cache, v_cache, cache_seqlens=cs, block_table=table,
                      check_inputs=False))
        return out
    return q, call, out


CASES = [("moe_fp16_M1", lambda g: moe_case(1, "fp16", g)), ("moe_fp16_M33", lambda g: moe_case(33, "fp16", g)),
         ("moe_fp8_M1", lambda g: moe_case(1, "fp8", g)), ("decode_B1_4k", lambda g: decode_case(1, 4096, g)),
         ("decode_B4_1k", lambda g: decode_case(4, 1024, g))]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_same_bits_with_a_producer_and_a_consumer_in_the_stream(pdl, name, make):
    gen = torch.Generator(device=DEV).manual_seed(7)
    inp, call, out = make(gen)
    fresh = [torch.randn(inp.shape, device=DEV, generator=gen).to(inp.dtype) for _ in range(20)]
    results = {}
    for on in (False, True):
        pdl(on)
        got = []
        for f in fresh:
            inp.copy_(f * 1.0)  # a torch kernel writes the input just before the chain
            call()
            got.append((out.clone(), out.float().sum()))  # and one reads the output at once
        torch.cuda.synchronize()
        results[on] = got
    for (a, sa), (b, sb) in zip(results[False], results[True]):
        assert torch.equal(a, b) and torch.equal(sa, sb)
    assert not torch.equal(results[True][0][0], results[True][1][0])  # fresh inputs, fresh outputs


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_same_bits_in_a_cuda_graph(pdl, name, make):
    gen = torch.Generator(device=DEV).manual_seed(11)
    inp, call, out = make(gen)
    fresh = [torch.randn(inp.shape, device=DEV, generator=gen).to(inp.dtype) for _ in range(10)]
    pdl(False)
    want = []
    for f in fresh:
        inp.copy_(f)
        want.append(call().clone())
    pdl(True)
    inp.copy_(fresh[0])
    call()  # load the modules before capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        call()
    for f, w in zip(fresh, want):
        inp.copy_(f)
        g.replay()
        assert torch.equal(out, w)
