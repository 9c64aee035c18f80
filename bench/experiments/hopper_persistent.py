"""The persistent sm_90 ping-pong forward (attn_fwd_hopper SCHEDULE 4,
tritonsrc/flash/fwd_hopper_persistent.py; non-causal) against the one-CTA-per-block
ping-pong (SCHEDULE 3), both through the rule's JIT launcher, and SDPA's cuDNN backend: every case checked against a float64
reference first, then timed at 16k tokens, hidden 2048 (bench_flash.py's shapes).
    python bench/experiments/hopper_persistent.py [--json out.json]   (sm_90 GPU)
    python bench/experiments/hopper_persistent.py --compile           (CPU: registers, spills)"""
import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test" / "gpu"), str(REPO / "bench")]

CONFIGS = {128: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3},
           96: {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 2},
           64: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3}}
SHIPPED = {"SCHEDULE": 3, "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0}  # the ping-pong config it is compared with
PERSISTENT = {"SCHEDULE": 4, "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0}


def launch(q, k, v, sm_scale, causal_type, config):
    """The persistent schedule (attn_fwd_hopper SCHEDULE 4) through the rule's JIT launcher."""
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
    return attn_fwd_hopper_jit(q, k, v, sm_scale, causal_type, {**config, **PERSISTENT})


def compile_only():
    from python import compile_kernel
    from python.cubin_resources import resources
    from python.rules_flash_hopper import attn_fwd_hopper as rule

    for D in (128, 64, 96):
        f = {"dtype": "bf16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": 0}
        c = compile_kernel.compile_one(rule, f, {**CONFIGS[D], **PERSISTENT}, 90)
        print(D, 0, "shared", c.metadata.shared, resources(c.asm["cubin"]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default="bench/results/flash_hopper_persistent_sm90.json")
    ap.add_argument("--dims", default="128,64,96", help="head dims checked (timed: those of 128, 64)")
    ap.add_argument("--dtypes", default="fp16,bf16")
    args = ap.parse_args()
    if args.compile:
        return compile_only()
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from bench_common import commit_id
    from flash_reference import FWD_TOL, LSE_TOL, attention_ref, rel_err
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit

    dims = [int(d) for d in args.dims.split(",")]
    dtypes = [{"fp16": torch.float16, "bf16": torch.bfloat16}[n] for n in args.dtypes.split(",")]
    failures = 0
    for D in dims:
        for dtype in dtypes:
            for causal, (B, Sq, Sk, Hq, Hk) in ((0, (2, 333, 333, 4, 2)), (0, (1, 1000, 130, 4, 2)),
                                               (0, (3, 1000, 1000, 16, 4)), (0, (1, 257, 1, 2, 2)),
                                               (0, (1, 1000, 1000, 20, 4)), (0, (1, 1, 77, 2, 1))):
                g = torch.Generator(device="cuda").manual_seed(D + causal + Sq)
                q = torch.randn(B, Sq, Hq, D, device="cuda", dtype=dtype, generator=g)
                k = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                v = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                for _ in (0, ):
                    out, lse = launch(q, k, v, 1 / math.sqrt(D), causal, CONFIGS[D])
                    ref, ref_lse = attention_ref(q, k, v, 1 / math.sqrt(D), causal)
                    fin = torch.isfinite(ref_lse)
                    err = rel_err(out, ref)
                    lerr = ((lse.double() - ref_lse)[fin].abs() / ref_lse[fin].abs().clamp_min(1)).max().item() \
                        if fin.any() else 0.0
                    ok = err < FWD_TOL[dtype] and lerr < LSE_TOL[dtype] and torch.equal(torch.isfinite(lse), fin)
                    if not ok:
                        failures += 1
                        print(f"FAIL D={D} {dtype} causal {causal} {(B, Sq, Sk, Hq, Hk)}: "
                              f"rel err {err:.3g}, lse err {lerr:.3g}", flush=True)
    print(f"check: {failures} failures", flush=True)
    rows = []
    # CUDA-graph replay: GPU time only (a JIT launch costs as much host time as a 2k forward)
    t = lambda fn: triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")  # noqa: E731
    print("| dtype | D | causal | seqlen | persistent TF/s | shipped ping-pong TF/s | cuDNN TF/s | pers/shipped | pers/cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for D in [d for d in dims if d in (128, 64)]:
            for S in (512, 2048, 8192):
                for causal in (0, ):
                    B, H = 16384 // S, 2048 // D
                    q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
                    k, v = torch.randn_like(q), torch.randn_like(q)
                    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
                    flops = 4 * B * H * S * S * D / (2 if causal else 1)
                    res = {"pers": t(lambda: launch(q, k, v, D ** -0.5, causal, CONFIGS[D])),
                           "shipped": t(lambda: attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal,
                                                                    {**CONFIGS[D], **SHIPPED}))}
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        res["cudnn"] = t(lambda: torch.nn.functional.scaled_dot_product_attention(
                            qt, kt, vt, is_causal=bool(causal)))
                    tf = {n: flops / (ms * 1e-3) / 1e12 for n, ms in res.items()}
                    print(f"| {str(dtype)[6:]} | {D} | {causal} | {S} | {tf['pers']:.0f} | {tf['shipped']:.0f} | "
                          f"{tf['cudnn']:.0f} | {tf['pers'] / tf['shipped']:.2f} | {tf['pers'] / tf['cudnn']:.2f} |",
                          flush=True)
                    rows.append({"dtype": str(dtype)[6:], "D": D, "causal": causal, "seqlen": S,
                                 "persistent_tflops": tf["pers"], "shipped_pingpong_tflops": tf["shipped"],
                                 "cudnn_tflops": tf["cudnn"]})
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "check_failures": failures, "rows": rows}
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
