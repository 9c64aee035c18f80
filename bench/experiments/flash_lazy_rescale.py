"""The sm_90 flash forward with the lazy rescale (RESCALE_TH 8) against the same
config with the eager one (RESCALE_TH 0), through the JIT, graph-timed (no
launch cost), at bench_flash.py's shapes (16k tokens, hidden 2048), with SDPA's
cuDNN backend in the same run. Each pair is checked against a float64
reference on a small case first (keys grown 8-fold along the sequence, so the
rescale is both taken and skipped).
    python bench/experiments/flash_lazy_rescale.py [--dims 256] [--seqlens 2048,8192] [--forms all] [--json out.json]
    python bench/experiments/flash_lazy_rescale.py --dims 128 --forms eager --schedules 3,5   (the schedules'
        eager forms side by side: SCHEDULE 5 releases K and V apart, 3 together)
The multiply it skips is 128 of the serial loop's 506 SASS instructions a tile at
head dim 256. Measured on an H100 (twenty-eighth session, bench/results/h100/
flash_lazy_rescale*_sm90.json): 0.93-1.04x at 256, 0.96-1.005x at 128, so the rule
offers it at head dim 256 only (other dims run a config outside the space here)."""
import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test" / "gpu"), str(REPO / "bench")]


def main():
    import triton
    from bench_common import commit_id
    from python.rules_flash_hopper import attn_fwd_hopper as rule

    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="256")
    ap.add_argument("--seqlens", default="2048,8192")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--forms", default="default", choices=["default", "all", "eager"],
                    help="the rule's default config, every eager candidate that has a lazy twin, or every eager "
                    "candidate whose SCHEDULE is in --schedules (its lazy twin too where the rule has one)")
    ap.add_argument("--schedules", default="0,3,5", help="--forms eager: the schedules to time")
    ap.add_argument("--json", default=str(REPO / "bench/results/flash_lazy_rescale_sm90.json"))
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    rows, failures = [], 0
    print("| D | causal | seqlen | config | eager TF/s | lazy TF/s | lazy/eager | cuDNN TF/s | eager/cuDNN | "
          "lazy/cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for D in (int(d) for d in args.dims.split(",")):
        for causal in (0, 2):
            f = {"dtype": args.dtype, "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal}
            space = rule.tuning.all_configs(f, 90)
            if args.forms == "default":
                forms = [dict(rule.tuning.default(f, 90))]
            elif args.forms == "all":
                forms = [c for c in space if not c["RESCALE_TH"] and dict(c, RESCALE_TH=8) in space]
            else:
                schedules = {int(v) for v in args.schedules.split(",")}
                forms = [c for c in space if not c["RESCALE_TH"] and c["SCHEDULE"] in schedules]
            for eager in forms:
                lazy = dict(eager, RESCALE_TH=8)
                lazy = lazy if args.forms != "eager" or lazy in space else None
                failures += check(D, causal, [c for c in (eager, lazy) if c], dtype)
                for S in (int(s) for s in args.seqlens.split(",")):
                    rows.append(timed(D, causal, S, eager, lazy, dtype))
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "check_failures": failures, "rows": rows}
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"check: {failures} failures")
    return 1 if failures else 0


def check(D, causal, configs, dtype):
    """Failures of the configs on a small case whose keys grow 8-fold (the rescale taken and skipped)."""
    from flash_reference import FWD_TOL, attention_ref, rel_err
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit

    g = torch.Generator(device="cuda").manual_seed(D + causal)
    q, k, v = (torch.randn(2, 700, 4, D, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    k = (k.float() * torch.linspace(1, 8, 700, device="cuda")[None, :, None, None]).to(dtype)
    ref, _ = attention_ref(q, k, v, D ** -0.5, causal)
    failures = 0
    for cfg in configs:
        err = rel_err(attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal, cfg)[0], ref)
        if not err < FWD_TOL[dtype]:
            failures += 1
            print(f"FAIL D={D} causal={causal} {cfg}: rel err {err:.3g}", flush=True)
    return failures


def timed(D, causal, S, eager, lazy, dtype):
    """One row: eager (timed before and after), lazy and cuDNN at bench_flash.py's shape for seqlen S."""
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
    from python.tune_shared import kernel_ms
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H = 16384 // S, 2048 // D
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=dtype) for _ in range(3))
    flops = 4 * B * H * S * S * D / (2 if causal else 1)
    tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
    out = torch.empty_like(q)
    lse = torch.empty(B, H, S, device="cuda", dtype=torch.float32)
    ms = {}
    for name, cfg in (("eager", eager), ("lazy", lazy), ("eager2", eager)):
        if cfg is None:  # no lazy twin in the rule's space
            ms[name] = float("nan")
            continue
        attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal, cfg, out=out, lse=lse)  # compile first
        ms[name] = kernel_ms(lambda: attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal, cfg, out=out, lse=lse))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn = kernel_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt,
                                                                                   is_causal=bool(causal)))
    e = min(ms["eager"], ms["eager2"])
    name = f"s{eager['SCHEDULE']}_n{eager['BLOCK_N']}_st{eager['NUM_STAGES']}_r{eager['maxnreg']}"
    print(f"| {D} | {causal} | {S} | {name} | {tf(e):.0f} | {tf(ms['lazy']):.0f} | {e / ms['lazy']:.3f} | "
          f"{tf(cudnn):.0f} | {cudnn / e:.2f} | {cudnn / ms['lazy']:.2f} |", flush=True)
    return {"dtype": str(dtype)[6:], "D": D, "causal": causal, "seqlen": S, "config": eager,
            "eager_ms": [ms["eager"], ms["eager2"]], "lazy_ms": ms["lazy"], "cudnn_ms": cudnn}


if __name__ == "__main__":
    sys.exit(main())
