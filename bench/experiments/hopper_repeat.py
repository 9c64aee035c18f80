"""Run-to-run reproducibility of the sm_90 flash forward (JIT of
tritonsrc/flash/fwd_hopper.py): one input, the same config N times, every
output compared bitwise with the first. A schedule without a race gives
identical bits; a race shows as some runs differing.
  python bench/experiments/hopper_repeat.py [--reps 40] [--source path/to/variant.py]
--source runs a patched copy of fwd_hopper.py instead (a hypothesis test)."""
import argparse
import importlib.util
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tritonsrc and python/ are packages there

PINGPONG = {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 3, "RESCALE_TH": 0, "num_warps": 4,
            "maxnreg": 0}
PP_N64 = {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 4, "SCHEDULE": 3, "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0}
SERIAL = {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 0, "RESCALE_TH": 0, "num_warps": 8, "maxnreg": 0}


def load_launcher(source):
    import python.jit.flash_fwd_hopper as jit
    if source:
        spec = importlib.util.spec_from_file_location("fwd_hopper_variant", source)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        jit.attn_fwd_hopper = mod.attn_fwd_hopper
    return jit.attn_fwd_hopper_jit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--source", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    launch = load_launcher(args.source)
    cases = [("pingpong", PINGPONG, torch.float16, 0, (2, 1500, 1500, 4, 2)),
             ("pingpong", PINGPONG, torch.float16, 1, (2, 1500, 1500, 4, 2)),
             ("pingpong", PINGPONG, torch.bfloat16, 0, (2, 1500, 1500, 4, 2)),
             ("pingpong", PINGPONG, torch.float16, 0, (4, 4096, 4096, 16, 16)),
             ("pp_n64", PP_N64, torch.float16, 0, (2, 1500, 1500, 4, 2)),
             ("serial", SERIAL, torch.float16, 0, (2, 1500, 1500, 4, 2))]
    if args.quick:
        cases = cases[:1]
    bad = 0
    for name, cfg, dtype, causal, (B, Sq, Sk, Hq, Hk) in cases:
        g = torch.Generator(device="cuda").manual_seed(causal)
        q = torch.randn(B, Sq, Hq, 128, device="cuda", dtype=dtype, generator=g)
        k = torch.randn(B, Sk, Hk, 128, device="cuda", dtype=dtype, generator=g)
        v = torch.randn(B, Sk, Hk, 128, device="cuda", dtype=dtype, generator=g)
        first, first_lse = launch(q, k, v, 1 / math.sqrt(128), causal, cfg)
        differ, worst, elems = 0, 0.0, 0
        for _ in range(args.reps):
            out, lse = launch(q, k, v, 1 / math.sqrt(128), causal, cfg)
            d = (out.float() - first.float()).abs()
            if not (torch.equal(out, first) and torch.equal(lse, first_lse)):
                differ += 1
                worst = max(worst, d.max().item())
                elems = max(elems, int((d > 0).sum()))
        bad += differ
        print(f"{name:9s} {str(dtype)[6:]:8s} causal {causal} {B}x{Sq}x{Sk} h{Hq}/{Hk}: "
              f"{differ} of {args.reps} runs differ from the first (max |diff| {worst:.3g}, up to {elems} elements)",
              flush=True)
    print("REPEAT SUMMARY:", "all bitwise equal" if bad == 0 else f"{bad} differing runs")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
