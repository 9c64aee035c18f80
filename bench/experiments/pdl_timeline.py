"""Per-kernel timeline of one call with programmatic dependent launch off and on: which kernel
of a chain gets slower when its neighbours start early (bench_pdl.py times only the whole call).

    python bench/experiments/pdl_timeline.py [--prefix install] [--cases mixtral:bf16:64,decode:1:32768]
    python bench/experiments/pdl_timeline.py --cases mixtral:int4_zp:64,mixtral:int4_zp:16   (where int4
        M=64's time goes outside its two GEMMs: ~80 us against ~17 at M=16, H100, thirty-third session)

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
from bench_pdl import MOE, decode_calls, moe_call, moe_weights  # noqa: E402
CALLS, REPLAYS = 8, 4


def timeline(torch, aotriton, fn, pdl):
    """[[name, [critical-path shares us], [durations us], [gaps us]]] per kernel position, and the
    call periods (us)."""
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
        if kind == "decode":
            fn = decode_calls(torch, aotriton, int(a), int(b))[0]
        else:
            fn = moe_call(torch, aotriton, *moe_weights(torch, kind, a), int(b), MOE[kind]["topk"])[0]
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
