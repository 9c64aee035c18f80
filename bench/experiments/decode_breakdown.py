"""Where a small-batch paged decode call spends its time: the split kernel,
the combine kernel and what lies between them.

bench_decode's B=1, 8k row takes 17 us per call in graph replay while the
split kernel alone (decode_warp_split.py, contiguous cache) takes ~9 us; this
prints, per shape, the call's graph-replay time and the device time of each
kernel it launches (torch.profiler/CUPTI, medians), so the gap is attributed
before anything is changed.

    python3 bench/experiments/decode_breakdown.py [--batches 1,8] [--contexts 8192,32768] [--splits 0,8,32]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HQ, HK, D, PAGE = 32, 4, 128, 64


def kernel_times_us(fn, reps=50):
    """{kernel name: device us per call (all its launches in a call, averaged over reps calls)}, and the
    launches per call."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    per_name = {}
    for e in prof.events():
        if e.device_time > 0:
            per_name.setdefault(e.name, []).append(e.device_time)
    return {name: sum(t) / reps for name, t in per_name.items()}, \
        sum(len(t) for t in per_name.values()) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--contexts", default="8192,32768")
    ap.add_argument("--splits", default="0,8,32", help="num_splits values (0: the dispatcher's choice)")
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO), str(Path(__file__).parent)]
    import torch
    import triton

    import aotriton
    from paged_case import paged_case

    torch.manual_seed(0)
    dev, dtype = "cuda", torch.bfloat16
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
          f"paged cache, page {PAGE}, {HQ} q / {HK} kv heads, D {D}, bf16")
    print("| B | context | num_splits | graph us/call | launches | kernel device us per call |\n|---|---|---|---|---|---|")
    for B in [int(b) for b in args.batches.split(",")]:
        for ctx in [int(c) for c in args.contexts.split(",")]:
            q, k_cache, v_cache, table, cs = paged_case(B, ctx, PAGE, HQ, HK, D, dtype, dev)
            for n in [int(s) for s in args.splits.split(",")]:
                def call(n=n):
                    return aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cs,
                                                            block_table=table, num_splits=n,
                                                            check_inputs=False)
                call()
                torch.cuda.synchronize()
                graph_us = triton.testing.do_bench_cudagraph(call, rep=100, return_mode="median") * 1e3
                kernels, launches = kernel_times_us(call)
                by_time = sorted(kernels.items(), key=lambda x: -x[1])
                detail = ", ".join(f"{name[:40]} {us:.1f}" for name, us in by_time)
                print(f"| {B} | {ctx} | {n} | {graph_us:.1f} | {launches:.1f} | {detail} |", flush=True)


if __name__ == "__main__":
    main()
