"""Host time per call of silu_and_mul on a tiny tensor, in one run:
aotriton from Python, the same Triton kernel through the Triton JIT, torch
eager, and (from the C++ program) the C++ API against a raw cuLaunchKernel loop.

    python bench/bench_launch_overhead.py [--build-dir build] [--prefix install]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def host_us_per_call(fn, batches=60, per_batch=200):
    import torch

    samples = []
    for b in range(batches + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        t1 = time.perf_counter()
        if b >= 5:
            samples.append((t1 - t0) / per_batch * 1e6)
    torch.cuda.synchronize()
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build-dir", default=str(REPO / "build"))
    ap.add_argument("--prefix", default=str(REPO / "install"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton
    import pyaotriton
    from tritonsrc.moe.activation import act_and_mul_kernel

    rows, cols = 4, 256
    x = torch.randn(rows, 2 * cols, device="cuda", dtype=torch.float16)
    out = torch.empty(rows, cols, device="cuda", dtype=torch.float16)
    stream = aotriton._glue.stream_of(x)
    ran = pyaotriton.act_and_mul(aotriton._glue.view(out, "o"), aotriton._glue.view(x, "x"), 0, stream, None)
    cfg = dict(kv.split("=") for kv in ran.split(","))
    block, warps = int(cfg["BLOCK"]), int(cfg["num_warps"])
    grid = (rows, triton.cdiv(cols, block))

    def jit():
        act_and_mul_kernel[grid](out, x, rows, cols, out.stride(0), x.stride(0), ACTIVATION=0, BLOCK=block,
                                 num_warps=warps)

    ref = torch.nn.functional.silu(x[:, :cols].float()) * x[:, cols:].float()
    jit()
    torch.cuda.synchronize()
    assert torch.allclose(out.float(), ref, rtol=2e-3, atol=2e-3)
    out.fill_(float("nan"))
    aotriton.silu_and_mul(x, out)
    torch.cuda.synchronize()
    assert torch.allclose(out.float(), ref, rtol=2e-3, atol=2e-3)

    vo, vx = aotriton._glue.view(out, "o"), aotriton._glue.view(x, "x")
    rows_out = {}
    rows_out["aotriton Python (torch layer)"] = host_us_per_call(lambda: aotriton.silu_and_mul(x, out))
    rows_out["pyaotriton binding (pre-built views)"] = host_us_per_call(
        lambda: pyaotriton.act_and_mul(vo, vx, 0, stream, None))
    rows_out["Triton JIT launch, same kernel+config"] = host_us_per_call(jit)
    rows_out["torch eager silu*mul (2 kernels)"] = host_us_per_call(
        lambda: torch.mul(torch.nn.functional.silu(x[:, :cols]), x[:, cols:], out=out))
    rows_out["aotriton Python (repeat)"] = host_us_per_call(lambda: aotriton.silu_and_mul(x, out))

    cpp = subprocess.run([str(Path(args.build_dir) / "test/gpu_check"), "bench"], capture_output=True, text=True,
                         env={**os.environ, "AOTRITON_IMAGE_DIR": str(Path(args.prefix) / "lib/aotriton.images")})
    print(cpp.stdout.strip())
    for line in cpp.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "BENCH" and parts[1].endswith("_us"):
            rows_out[f"C++: {parts[1]}"] = float(parts[2])

    print(f"\nhost time per call, silu_and_mul fp16 [{rows}, {2 * cols}] -> [{rows}, {cols}], config {ran}")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print("| path | us/call |\n|---|---|")
    for k, v in rows_out.items():
        print(f"| {k} | {v:.2f} |")
    py = min(rows_out["aotriton Python (torch layer)"], rows_out["aotriton Python (repeat)"])
    print(f"\nratio aotriton Python / Triton JIT = {py / rows_out['Triton JIT launch, same kernel+config']:.2f} "
          f"(target <= 0.5)")
    if "C++: cpp_minus_raw_us" in rows_out:
        print(f"C++ API minus raw cuLaunchKernel = {rows_out['C++: cpp_minus_raw_us']:.2f} us (target <= 1.0)")


if __name__ == "__main__":
    main()
