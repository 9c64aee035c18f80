"""The sm_90 flash forward (JIT of tritonsrc/flash/fwd_hopper.py) at head dims
96 (128-wide tiles, TMA zero-fills the padding), 192 (three 64-column blocks)
and 256: every config the rule allows checked against a float64 reference
(sequence tails, GQA, causal both ways), then timed against SDPA's flash and
cuDNN backends at 16k tokens, hidden 2048 (bench_flash.py's shapes).
    python bench/experiments/hopper_head_dims.py [--dims 192,256] [--json out.json]"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test" / "gpu"), str(REPO / "bench")]


def configs(D):
    """Every config the rule lets the tuner try at head dim D."""
    from python.rules_flash_hopper import attn_fwd_hopper as rule
    return rule.tuning.all_configs({"dtype": "bf16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": 0}, 90)


def main():
    from flash_reference import FWD_TOL, LSE_TOL, attention_ref, rel_err
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import triton
    from bench_common import commit_id

    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="96,192,256")
    ap.add_argument("--json", default="bench/results/flash_hopper_head_dims_sm90.json")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    failures = 0
    for D in dims:
        for cfg in configs(D):
            for dtype in (torch.float16, torch.bfloat16):
                for causal, (B, Sq, Sk, Hq, Hk) in ((0, (2, 333, 333, 4, 2)), (1, (1, 1000, 130, 4, 2)),
                                                   (2, (2, 130, 1000, 6, 2)), (2, (1, 257, 1, 2, 2))):
                    g = torch.Generator(device="cuda").manual_seed(D + causal)
                    q = torch.randn(B, Sq, Hq, D, device="cuda", dtype=dtype, generator=g)
                    k = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                    v = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                    out, lse = attn_fwd_hopper_jit(q, k, v, 1 / math.sqrt(D), causal, cfg)
                    ref, ref_lse = attention_ref(q, k, v, 1 / math.sqrt(D), causal)
                    fin = torch.isfinite(ref_lse)
                    err = rel_err(out, ref)
                    lerr = ((lse.double() - ref_lse)[fin].abs() / ref_lse[fin].abs().clamp_min(1)).max().item() \
                        if fin.any() else 0.0
                    ok = err < FWD_TOL[dtype] and lerr < LSE_TOL[dtype] and torch.equal(torch.isfinite(lse), fin)
                    failures += not ok
                    if not ok:
                        print(f"FAIL D={D} {cfg} {dtype} causal {causal} {(B, Sq, Sk, Hq, Hk)}: "
                              f"rel err {err:.3g}, lse err {lerr:.3g}", flush=True)
    print(f"check: {failures} failures", flush=True)
    rows = []
    print("| dtype | D | causal | seqlen | config | hopper TF/s | SDPA flash | SDPA cuDNN | /flash | /cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float16):
        for D in dims:
            for S in (2048, 8192):
                for causal in (0, 2):
                    B, H = 16384 // S, 2048 // D  # as bench_flash.py (192: 10 heads)
                    q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
                    k, v = torch.randn_like(q), torch.randn_like(q)
                    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
                    flops = 4 * B * H * S * S * D / (2 if causal else 1)
                    t = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
                    best = None
                    for cfg in configs(D):
                        attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal, cfg)  # compile outside the timing
                        torch.cuda.synchronize()
                        ms = t(lambda: attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal, cfg))
                        print(f"  D={D} {str(dtype)[6:]} causal={causal} S={S} s{cfg['SCHEDULE']}_n{cfg['BLOCK_N']}"
                              f"_st{cfg['NUM_STAGES']}: {flops / (ms * 1e-3) / 1e12:.0f} TF/s", flush=True)
                        if best is None or ms < best[0]:
                            best = (ms, cfg)
                    res = {}
                    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                        try:
                            with sdpa_kernel(be):
                                res[name] = t(lambda: torch.nn.functional.scaled_dot_product_attention(
                                    qt, kt, vt, is_causal=bool(causal)))
                        except RuntimeError:
                            res[name] = float("nan")
                    tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
                    name = f"s{best[1]['SCHEDULE']}_n{best[1]['BLOCK_N']}_st{best[1]['NUM_STAGES']}"
                    print(f"| {str(dtype)[6:]} | {D} | {causal} | {S} | {name} | {tf(best[0]):.0f} | "
                          f"{tf(res['flash']):.0f} | {tf(res['cudnn']):.0f} | {res['flash'] / best[0]:.2f} | "
                          f"{res['cudnn'] / best[0]:.2f} |", flush=True)
                    rows.append({"dtype": str(dtype)[6:], "D": D, "causal": causal, "seqlen": S, "config": best[1],
                                 "hopper_tflops": tf(best[0]), "flash_tflops": tf(res["flash"]),
                                 "cudnn_tflops": tf(res["cudnn"])})
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "check_failures": failures, "rows": rows}
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
