"""Why did the graph-timed tuner's head-dim-64 picks run slower in bench_flash?
(eighth session: the tuner timed the serial BLOCK_N 128 config without a
register cap at 1.00-1.06x the default; bench_flash then measured the AOT
kernel with it at 0.65-0.82x of the default's TFLOP/s.)

Times the JIT kernel of each config three ways, as kernel durations from the
profiler (CUPTI), so the JIT's host cost does not count:
  graph    back-to-back replays, as tune_shared.kernel_ms times (L2 warm)
  flushed  a 256 MB L2 flush before each call, as do_bench (bench_flash) times
  events   do_bench's own median (host cost included when the host is slower)
and the build's own cubin of each config (python/jit_launch.aot_form, what the
tuner now times) by graph replay and flushed, with its error against SDPA in fp32.
--head-dims 128 times head dim 128's ping-pong and persistent forms instead (issue 19: the tuner's graph
replay gave 606 TF/s at seqlen 2048 on the H200 where bench_flash's do_bench gave 545), and --cudnn adds
SDPA's cuDNN backend timed the same four ways, so the two timing methods can be compared side by side.
    python bench/experiments/fwd_timing_methods.py [--head-dims 64] [--seqlens 512,2048,8192] [--dtypes fp16,bf16]
                                                   [--cudnn] [--json FILE]"""
import os
import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "default serial n64 st2": {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 0,
        "RESCALE_TH": 0, "num_warps": 8, "maxnreg": 0},
    "tuned serial n128 st3": {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 0,
        "RESCALE_TH": 0, "num_warps": 8, "maxnreg": 0},
    "serial n128 st3 reg128": {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 0,
        "RESCALE_TH": 0, "num_warps": 8, "maxnreg": 128},
}
CONFIGS_128 = {  # the sm_90 database's picks for bf16 head dim 128, non-causal (2k: ping-pong; 1k/4k/8k: persistent)
    "ping-pong n128 st3": {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 3,
        "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0},
    "persistent n128 st3": {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 4,
        "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0},
}


def kernel_us(fn, flush, reps=30, name="attn_fwd_hopper"):
    """Median device duration (us) of the kernels fn launches whose name holds `name` (None: the sum of
    every kernel of a call but the flush's)."""
    from torch.profiler import ProfilerActivity, profile
    cache = torch.empty(256 * 2 ** 20, dtype=torch.int8, device="cuda")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            if flush:
                cache.zero_()
            fn()
        torch.cuda.synchronize()
    if name is None:  # every kernel of the call (CPU ops carry their kernels' time too); the flush is a fill
        calls = [e.device_time for e in prof.events() if e.device_time > 0
                 and e.device_type == torch.autograd.DeviceType.CUDA and "elementwise" not in e.name]
        per_call = len(calls) // reps
        times = [sum(calls[i * per_call:(i + 1) * per_call]) for i in range(reps)] if per_call else []
    else:
        times = [e.device_time for e in prof.events() if name in e.name and e.device_time > 0]
    return statistics.median(times) if times else float("nan"), len(times)


def graph_us(fn, reps=30):
    """Median per-kernel time of back-to-back replays of a graph of reps calls (events)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    samples = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        samples.append(a.elapsed_time(b) * 1e3 / reps)
    return statistics.median(samples)


def cudnn_row(q, k, v, ref, dtype_name, D, S, flops):
    """SDPA's cuDNN backend on the same tensors, timed as the Gluon kernel is (no AOT form)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import triton
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def fn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
    err = (fn()[:1].transpose(1, 2).float() - ref).abs().max().item()
    g = graph_us(fn)
    warm, _ = kernel_us(fn, flush=False, name=None)
    cold, _ = kernel_us(fn, flush=True, name=None)
    ev = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e3
    print(f"| {dtype_name[6:]} | {D} | {S} | SDPA cuDNN | {g:.1f} ({flops / g / 1e6:.0f} TF/s) | {warm:.1f} | "
          f"{cold:.1f} ({flops / cold / 1e6:.0f} TF/s) | {ev:.1f} ({flops / ev / 1e6:.0f} TF/s) | | | {err:.2e} |",
          flush=True)
    return {"dtype": dtype_name, "D": D, "seqlen": S, "name": "SDPA cuDNN", "graph_us": g, "profiler_warm_us": warm,
            "profiler_flushed_us": cold, "do_bench_us": ev, "max_err": err}


def main():
    import triton
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dims", default="64")
    ap.add_argument("--seqlens", default="512,2048,8192")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--cudnn", action="store_true", help="also SDPA's cuDNN backend, timed the same ways")
    ap.add_argument("--json", help="default: bench/results/flash_fwd_timing_methods[_d<head dims>]_sm90.json "
                    "(head dim 64 keeps the original file's name, so other head dims do not overwrite it)")
    args = ap.parse_args()
    if args.json is None:
        dims = "" if args.head_dims == "64" else "_d" + args.head_dims.replace(",", "_")
        args.json = str(REPO / f"bench/results/flash_fwd_timing_methods{dims}_sm90.json")
    rows = []
    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}; non-causal, 16k tokens, hidden 2048;"
          " kernel us")
    print("| dtype | D | seqlen | config | graph (replay) | profiler, L2 warm | profiler, L2 flushed | do_bench events "
          "| AOT form: graph | AOT form: flushed | AOT form: max err vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    for dtype, D, S in ((dtypes[t], int(d), int(s)) for t in args.dtypes.split(",")
                        for d in args.head_dims.split(",") for s in args.seqlens.split(",")):
        B, H = 16384 // S, 2048 // D
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=dtype) for _ in range(3))
        out = torch.empty_like(q)
        lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
        ref = torch.nn.functional.scaled_dot_product_attention(
            *(t[:1].transpose(1, 2).float() for t in (q, k, v))).transpose(1, 2)
        flops = 4 * B * H * S * S * D
        if args.cudnn:
            try:
                rows.append(cudnn_row(q, k, v, ref, str(dtype), D, S, flops))
            except RuntimeError as e:  # no cuDNN attention for this shape / build: the Gluon rows still run
                print(f"| {str(dtype)[6:]} | {D} | {S} | SDPA cuDNN | failed: {str(e).splitlines()[0][:100]} |")
        for name, cfg in (CONFIGS_128 if D == 128 else CONFIGS).items():
            fn = lambda cfg=cfg: attn_fwd_hopper_jit(q, k, v, D ** -0.5, 0, config=cfg, out=out, lse=lse)
            try:
                os.environ["AOTRITON_JIT_AOT_FORM"] = "0"
                g = graph_us(fn)
                warm, n1 = kernel_us(fn, flush=False)
                cold, n2 = kernel_us(fn, flush=True)
                ev = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e3
                os.environ["AOTRITON_JIT_AOT_FORM"] = "1"
                out.fill_(float("nan"))
                fn()
                err = (out[:1].float() - ref).abs().max().item()
                g_aot = graph_us(fn)
                cold_aot, _ = kernel_us(fn, flush=True)
            except Exception as e:  # one config failing must not hide the others
                print(f"| {dtype} | {D} | {S} | {name} | failed: {str(e).splitlines()[0][:100]} |")
                continue
            rows.append({"dtype": str(dtype), "D": D, "seqlen": S, "config": cfg, "name": name, "graph_us": g,
                         "profiler_warm_us": warm, "profiler_flushed_us": cold, "do_bench_us": ev,
                         "aot_form_graph_us": g_aot, "aot_form_flushed_us": cold_aot, "aot_form_max_err": err,
                         "kernels_seen": [n1, n2]})
            print(f"| {str(dtype)[6:]} | {D} | {S} | {name} | {g:.1f} ({flops / g / 1e6:.0f} TF/s) | {warm:.1f} | "
                  f"{cold:.1f} ({flops / cold / 1e6:.0f} TF/s) | {ev:.1f} | {g_aot:.1f} | "
                  f"{cold_aot:.1f} ({flops / cold_aot / 1e6:.0f} TF/s) | {err:.2e} |", flush=True)
    Path(args.json).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "triton": triton.__version__,
                                           "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
