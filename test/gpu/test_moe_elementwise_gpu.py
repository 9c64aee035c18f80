"""silu/gelu_and_mul and moe_sum through the Python package vs float64 torch."""
import pytest
import torch

TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2, torch.float32: 1e-5}
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def rel_err(out, ref):
    assert torch.isfinite(out).all(), "unwritten (NaN-poisoned) or non-finite output"
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 511), (222, 2048), (33, 14336)])
def test_act_and_mul(dtype, kind, rows, cols):
    import aotriton

    x = torch.randn(rows, 2 * cols + 16, device="cuda", dtype=dtype)[:, 8 : 8 + 2 * cols]  # strided rows
    out = torch.full((rows, cols), float("nan"), device="cuda", dtype=dtype)
    if kind == "silu":
        aotriton.silu_and_mul(x, out)
        act = torch.nn.functional.silu(x[:, :cols].double())
    else:
        approx = "none" if kind == "gelu" else "tanh"
        aotriton.gelu_and_mul(x, out, approximate=approx)
        act = torch.nn.functional.gelu(x[:, :cols].double(), approximate=approx)
    ref = act * x[:, cols:].double()
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,topk,hidden", [(1, 1, 8), (7, 2, 4096), (33, 8, 7168), (2048, 6, 2049)])
def test_moe_sum(dtype, tokens, topk, hidden):
    import aotriton

    x = torch.randn(tokens, topk, hidden, device="cuda", dtype=dtype)
    out = aotriton.moe_sum(x)
    assert rel_err(out, x.double().sum(1)) < TOL[dtype]


def test_bad_input_raises():
    import aotriton

    x = torch.randn(4, 16, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="out is fp32, expected fp16"):
        aotriton.silu_and_mul(x, torch.empty(4, 8, device="cuda", dtype=torch.float32))
    with pytest.raises(ValueError, match="2 \\* out.size"):
        aotriton.silu_and_mul(x, torch.empty(4, 7, device="cuda", dtype=torch.float16))
    with pytest.raises(ValueError, match="contiguous"):
        aotriton.silu_and_mul(x.t().contiguous().t())
    with pytest.raises(ValueError, match="aligned"):
        aotriton.silu_and_mul(torch.randn(4, 17, device="cuda", dtype=torch.float16)[:, 1:])
    with pytest.raises(ValueError, match="dtype"):
        aotriton.silu_and_mul(torch.randint(0, 5, (4, 16), device="cuda", dtype=torch.int32))
    with pytest.raises(ValueError, match="3-D"):
        aotriton.moe_sum(x)


def test_force_config_and_unknown_config():
    import aotriton
    import pyaotriton

    x = torch.randn(8, 64, device="cuda", dtype=torch.float16)
    out = torch.empty(8, 32, device="cuda", dtype=torch.float16)
    dev = torch.cuda.current_device()
    ran = pyaotriton.act_and_mul(aotriton._glue.view(out, "out"), aotriton._glue.view(x, "x"), 0,
                                 torch.cuda.current_stream().cuda_stream, None)
    assert "BLOCK=" in ran
    again = pyaotriton.act_and_mul(aotriton._glue.view(out, "out"), aotriton._glue.view(x, "x"), 0,
                                   torch.cuda.current_stream().cuda_stream, ran)
    assert again == ran
    with pytest.raises(RuntimeError, match="no config BLOCK=7"):
        aotriton.silu_and_mul(x, out, force_config="BLOCK=7,num_stages=1,num_warps=4")
    assert dev == torch.cuda.current_device()


def test_cuda_graph_capture():
    import aotriton

    x = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(64, 512, device="cuda", dtype=torch.bfloat16)
    aotriton.silu_and_mul(x, out)  # load the module before capture
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            aotriton.silu_and_mul(x, out)
    x.copy_(torch.randn_like(x))
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref = torch.nn.functional.silu(x[:, :512].double()) * x[:, 512:].double()
    assert rel_err(out, ref) < TOL[torch.bfloat16]


def test_side_stream_and_threads():
    import threading

    import aotriton

    errors = []

    def work(seed):
        try:
            g = torch.Generator(device="cuda").manual_seed(seed)
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                x = torch.randn(100, 300, device="cuda", generator=g)
                out = aotriton.silu_and_mul(x)
                ref = torch.nn.functional.silu(x[:, :150].double()) * x[:, 150:].double()
            s.synchronize()
            assert rel_err(out, ref) < TOL[torch.float32]
        except Exception as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
