"""Where a decode fused_experts call spends its time (issue 18.3: fp8 at M=1 reaches
0.57-0.66 of the HBM roofline, bf16 0.87-0.95): one CUDA graph of the call replayed
under torch.profiler; per kernel its median duration, and the replay's wall time
minus the kernels' sum (the gaps between launches).

    python bench/experiments/moe_decode_kernels.py [--cases mixtral:fp8_tensor:1,...] [--prefix install]

Weights are random (values do not change the time); routing random.
"""
import argparse
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
LAYERS = {"mixtral": dict(E=8, topk=2, K=4096, N=14336), "deepseek": dict(E=256, topk=8, K=7168, N=2048)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="mixtral:fp8_tensor:1,mixtral:fp8_block:1,mixtral:bf16:1,"
                                       "deepseek:fp8_tensor:1,deepseek:fp8_tensor:8")
    ap.add_argument("--prefix", default="install")
    ap.add_argument("--replays", type=int, default=30)
    args = ap.parse_args()
    import torch
    sys.path.insert(0, os.path.join(args.prefix, "lib", "python"))
    import aotriton
    from torch.profiler import ProfilerActivity, profile

    dev = "cuda"
    for case in args.cases.split(","):
        layer, quant, M = case.split(":")
        M = int(M)
        s = LAYERS[layer]
        E, topk, K, N = s["E"], s["topk"], s["K"], s["N"]
        kw = {}
        if quant == "bf16":
            w1 = torch.randn(E, 2 * N, K, device=dev, dtype=torch.bfloat16) / K ** 0.5
            w2 = torch.randn(E, K, N, device=dev, dtype=torch.bfloat16) / N ** 0.5
        else:
            w1 = (torch.randn(E, 2 * N, K, device=dev, dtype=torch.bfloat16) * 4).to(torch.float8_e4m3fn)
            w2 = (torch.randn(E, K, N, device=dev, dtype=torch.bfloat16) * 4).to(torch.float8_e4m3fn)
            if quant == "fp8_block":
                s1 = torch.rand(E, -(-2 * N // 128), -(-K // 128), device=dev) * 1e-3 + 1e-4
                s2 = torch.rand(E, -(-K // 128), -(-N // 128), device=dev) * 1e-3 + 1e-4
                kw = dict(use_fp8_w8a8=True, w1_scale=s1, w2_scale=s2, block_shape=[128, 128])
            else:
                s1, s2 = torch.rand(E, device=dev) * 1e-3 + 1e-4, torch.rand(E, device=dev) * 1e-3 + 1e-4
                kw = dict(use_fp8_w8a8=True, w1_scale=s1, w2_scale=s2)
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        ids = torch.rand(M, E, device=dev).topk(topk, dim=-1).indices.to(torch.int32).contiguous()
        w = torch.rand(M, topk, device=dev) + 0.1
        w = w / w.sum(-1, keepdim=True)
        out = torch.empty_like(x)
        ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8, device=dev)
        call = lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws, **kw)  # noqa: E731
        call()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            call()
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
        used = ids.unique().numel()
        wbytes = used * (w1[0].numel() * w1.element_size() + w2[0].numel() * w2.element_size())
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        walls = []
        for _ in range(args.replays):
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            walls.append(start.elapsed_time(end) * 1e3)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.replays):
                g.replay()
            torch.cuda.synchronize()
        per = defaultdict(list)
        for ev in prof.events():
            if ev.device_type.name == "CUDA" and ev.device_time > 0:
                per[ev.name].append(ev.device_time)
        wall = statistics.median(walls)
        print(f"\n{layer} {quant} M={M}: graph replay {wall:.1f} us (event timed), {used} experts touched, "
              f"weights {wbytes / 1e6:.1f} MB")
        total = 0.0
        for name, ts in sorted(per.items(), key=lambda kv: -statistics.median(kv[1])):
            med = statistics.median(ts) * len(ts) / args.replays  # per replay (a kernel may run twice)
            total += med
            print(f"  {med:8.1f} us  x{len(ts) // args.replays}  {name[:110]}")
        print(f"  kernels sum {total:.1f} us; gaps {wall - total:.1f} us")
        del w1, w2, ws, g
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
