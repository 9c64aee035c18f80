"""Experiment (issue 18.3 / 12: fixed costs of decode chains): what programmatic dependent
launch saves per kernel boundary on this GPU. A chain like fused_experts at M=1 (small
kernels around two memory-bound ones) runs in one CUDA graph, with every kernel launched
normally, then with launch_pdl=True and griddepcontrol.wait at each kernel's start (the
dependent grid is scheduled before its predecessor ends and waits for its results on the
GPU). Each kernel reads what the previous one wrote, so the order is observable: the
chain's final value is checked in both modes.

    python bench/experiments/pdl_chain.py [--small 6] [--stream-mb 0,64,256]
"""
import argparse

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait


@triton.jit
def step_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """dst = src + 1 over n elements (a small kernel of the chain)."""
    if PDL:
        gdc_wait()  # the predecessor's writes are visible after this
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offs, mask=offs < n)
    tl.store(dst_ptr + offs, x + 1.0, mask=offs < n)


@triton.jit
def stream_kernel(src_ptr, w_ptr, dst_ptr, n, nw, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """dst = src + (sum of a program's slice of w) * 0: reads nw bytes of weights like a decode GEMM."""
    if PDL:
        gdc_wait()
    pid = tl.program_id(0)
    per = tl.cdiv(nw, tl.num_programs(0))
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(pid * per, tl.minimum(pid * per + per, nw), BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(w_ptr + offs, mask=offs < tl.minimum(pid * per + per, nw), other=0).to(tl.float32)
    offs = tl.arange(0, BLOCK)
    if pid == 0:
        x = tl.load(src_ptr + offs, mask=offs < n)
        tl.store(dst_ptr + offs, x + 1.0 + 0.0 * tl.sum(acc, axis=0), mask=offs < n)


def chain(bufs, w, small, pdl, sms):
    n = bufs[0].numel()
    i = 0
    for j in range(small + (2 if w is not None else 0)):
        src, dst = bufs[i % 2], bufs[(i + 1) % 2]
        if w is not None and j in (small // 2, small + 1):
            stream_kernel[(sms, )](src, w, dst, n, w.numel(), BLOCK=1024, PDL=pdl, launch_pdl=pdl)
        else:
            step_kernel[(1, )](src, dst, n, BLOCK=1024, PDL=pdl, launch_pdl=pdl)
        i += 1
    return bufs[i % 2], i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=6)
    ap.add_argument("--stream-mb", default="0,64,256")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}, triton {triton.__version__}; chain of {args.small} one-program kernels"
          " (+2 weight-streaming kernels of the given size)")
    print("| stream MB | kernels | plain us | PDL us | saved per boundary us |\n|---|---|---|---|---|")
    for mb in map(int, args.stream_mb.split(",")):
        w = torch.randn(mb * 2 ** 20 // 2, device="cuda", dtype=torch.bfloat16) if mb else None
        times = {}
        for pdl in (False, True):
            bufs = [torch.zeros(1024, device="cuda"), torch.zeros(1024, device="cuda")]
            out, count = chain(bufs, w, args.small, pdl, sms)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out, count = chain(bufs, w, args.small, pdl, sms)
            bufs[0].zero_()
            bufs[1].zero_()
            g.replay()
            torch.cuda.synchronize()
            assert torch.all(out == count), (pdl, out[:4], count)  # every step saw its predecessor's result
            runs = []
            for _ in range(21):  # median of 21 batches of 50 replays, event-timed
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(50):
                    g.replay()
                end.record()
                end.synchronize()
                runs.append(start.elapsed_time(end) * 1e3 / 50)
            times[pdl] = sorted(runs)[len(runs) // 2]
        saved = (times[False] - times[True]) / max(count - 1, 1)
        print(f"| {mb} | {count} | {times[False]:.1f} | {times[True]:.1f} | {saved:.2f} |", flush=True)


if __name__ == "__main__":
    main()
