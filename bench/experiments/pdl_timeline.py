"""Per-kernel timeline of one call with programmatic dependent launch off and on: which kernel
of a chain gets slower when its neighbours start early (bench_pdl.py times only the whole call).

    python bench/experiments/pdl_timeline.py [--prefix install] [--cases mixtral:bf16:64,decode:1:32768]

Each case is captured in a CUDA graph of CALLS calls, once with PDL off and once on, and replayed
under torch.profiler (CUPTI records the kernels a graph launches). Kernels are grouped by their
position in the call; per position the table gives the median of: the kernel's share of the
critical path (its end minus the previous kernel's end, the previous call's last one for the
first), its duration, and the gap from the previous kernel's end to its start (negative: it
started while that one still ran, as an early-launched program does: its duration then includes
its wait in griddepcontrol.wait); and the call's period (one call's last end to the next's).
"""
import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from bench_common import random_weights  # noqa: E402
MOE = {"mixtral": dict(E=8, topk=2, K=4096, N=14336), "deepseek": dict(E=256, topk=8, K=7168, N=2048)}
CALLS, REPLAYS = 8, 4


def make_moe(torch, aotriton, layer, quant, M):
    d = MOE[layer]
    E, topk, K, N = d["E"], d["topk"], d["K"], d["N"]
    wdt = torch.bfloat16 if quant == "bf16" else torch.float8_e4m3fn
    w1 = random_weights(torch, E, 2 * N, K, wdt)
    w2 = random_weights(torch, E, K, N, wdt)
    kw = {} if quant == "bf16" else dict(use_fp8_w8a8=True, w1_scale=torch.full((E,), 1 / 64, device="cuda"),
                                         w2_scale=torch.full((E,), 1 / 64, device="cuda"))
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    ids = torch.rand(M, E, device="cuda").topk(topk, dim=-1).indices.to(torch.int32)
    w = torch.rand(M, topk, device="cuda") + 0.1
    w = w / w.sum(-1, keepdim=True)
    out = torch.empty_like(x)
    ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8, device="cuda")
    return lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws, **kw)


def make_decode(torch, aotriton, B, ctx, HQ=32, HK=4, D=128, PAGE=64):
    blocks = B * ctx // PAGE
    k_cache = torch.randn(blocks, PAGE, HK, D, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    table = torch.randperm(blocks, device="cuda").view(B, ctx // PAGE).to(torch.int32)
    q = torch.randn(B, 1, HQ, D, device="cuda", dtype=torch.bfloat16)
    cs = torch.full((B,), ctx, dtype=torch.int32, device="cuda")
    return lambda: aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cs, block_table=table,
                                                    check_inputs=False)


def timeline(torch, aotriton, fn, pdl):
    """[(name, [durations us], [gaps us])] per kernel position, and the call spans (us)."""
    from torch.profiler import ProfilerActivity, profile
    aotriton.set_programmatic_dependent_launch(pdl)
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(CALLS):
            fn()
    g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            g.replay()
        torch.cuda.synchronize()
    aotriton.set_programmatic_dependent_launch(False)
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower()
                      and "memset" not in e.name.lower()), key=lambda e: e.time_range.start)
    per_call = len(kernels) // (CALLS * REPLAYS)
    assert per_call * CALLS * REPLAYS == len(kernels), f"{len(kernels)} kernels for {CALLS * REPLAYS} calls"
    positions = [[k.name[:40], [], [], []] for k in kernels[:per_call]]
    periods = []
    for c in range(CALLS * REPLAYS):
        if c % CALLS == 0:
            continue  # a replay's first call: the graph launch before it is not the call's
        call, prev = kernels[c * per_call:(c + 1) * per_call], kernels[(c - 1) * per_call:c * per_call]
        periods.append(call[-1].time_range.end - prev[-1].time_range.end)
        for i, k in enumerate(call):
            before = call[i - 1] if i else prev[-1]
            positions[i][1].append(k.time_range.end - before.time_range.end)
            positions[i][2].append(k.time_range.end - k.time_range.start)
            positions[i][3].append(k.time_range.start - before.time_range.end)
    return positions, periods


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--cases", default="mixtral:bf16:64,mixtral:bf16:8,decode:1:32768,decode:8:8192")
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch

    import aotriton
    torch.manual_seed(0)
    print(f"GPU {torch.cuda.get_device_name()}, aotriton {aotriton.version()}")
    med = statistics.median
    for case in args.cases.split(","):
        kind, a, b = case.split(":")
        fn = make_decode(torch, aotriton, int(a), int(b)) if kind == "decode" else make_moe(torch, aotriton, kind, a,
                                                                                             int(b))
        (off, off_span), (on, on_span) = (timeline(torch, aotriton, fn, p) for p in (False, True))
        print(f"\n{case}: call period off {med(off_span):.1f} us, on {med(on_span):.1f} us")
        print("| # | kernel | off: path us | duration | gap | on: path us | duration | gap |\n"
              "|---|---|---|---|---|---|---|---|")
        for i, (a_off, a_on) in enumerate(zip(off, on)):
            cols = " | ".join(f"{med(a[j]):.1f}" for a in (a_off, a_on) for j in (1, 2, 3))
            print(f"| {i} | {a_off[0]} | {cols} |", flush=True)
        del fn
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
