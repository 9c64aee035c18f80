"""Experiment: the Gluon Hopper flash backward (tritonsrc/flash/bwd_hopper.py)
against our Triton backward (python/jit/flash_bwd.py, the split path) and
SDPA's flash and cuDNN backends, backward alone, on the bench grid
(batch * seqlen = 16k tokens, hidden 2048; TFLOP/s count 2.5x the forward's
4*B*H*S^2*D, halved when causal). JIT only; needs an sm_90 GPU.

    python bench/experiments/flash_bwd_hopper.py [--quick] [--dtypes bf16,fp16] [--json PATH]

Variants (VARIANTS): "fused" dQ by fp32 atomics in the Gluon kernel, then
bwd_dq_convert; "split" the Gluon dK/dV kernel, then the Triton bwd_dq
kernel (the deterministic fallback); both warp-specialized; "serial" /
"serial_split" the same in one partition; "fused_1wg" (head dim 64) one
warpgroup and 64 keys per CTA, two CTAs per SM; "fused_st3" three Q/dO stages. Every variant is first checked against a float64 reference on fresh
random data into NaN-poisoned outputs (sequence tails, GQA, both causal
kinds, one bench-sized shape; bounds: test/gpu/flash_reference.py's
GRAD_TOL); a failing check prints FAIL, the timings still run, and the exit
status is 1. Writes bench/results/flash_bwd_hopper_experiment_sm90.json.
"""
import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from python.jit.flash_bwd_hopper import DEFAULT as FUSED  # noqa: E402

VARIANTS = {
    # Warp-specialized (SCHEDULE 1): a worker warpgroup refills Q/dO and issues
    # the dQ atomics from shared memory while the MMA warpgroups go on.
    "fused": FUSED,
    "split": {d: dict(c, FUSE_DQ=False) for d, c in FUSED.items()},
    # One partition (SCHEDULE 0): the MMA warpgroups refill and add dQ themselves.
    "serial": {d: dict(c, SCHEDULE=0) for d, c in FUSED.items()},
    "serial_split": {d: dict(c, SCHEDULE=0, FUSE_DQ=False) for d, c in FUSED.items()},
    # One warpgroup, 64 keys per CTA: two CTAs per SM overlap each other's
    # softmax with wgmma (twice the dQ atomics and Q/dO reads).
    # Head dim 64 only: at 128 the [64, 128] dQ tile of one warpgroup spills.
    "fused_1wg": {64: dict(FUSED[64], BLOCK_N=64, num_warps=4, SCHEDULE=0)},
    # A third Q/dO stage (head dim 64: the dQ buffers leave no room at 128).
    "fused_st3": {64: dict(FUSED[64], NUM_STAGES=3)},
}
DEVICE = "cuda"
TOKENS, HIDDEN = 16384, 2048
SEQLENS = [512, 1024, 2048, 4096, 8192]
QUICK_SEQLENS = [1024, 4096]
# (B, Sq, Sk, Hq, Hk, causal_type): tails on both sides, GQA, bottom-right
# with Sq > Sk (rows that see no key) and Sq < Sk, one key tile, one row.
CHECK_SHAPES = [(2, 300, 300, 4, 4, 0), (1, 190, 517, 4, 2, 0), (1, 1, 77, 2, 1, 0),
                (2, 300, 300, 4, 4, 1), (1, 257, 129, 2, 2, 1),
                (1, 200, 333, 4, 2, 2), (1, 333, 200, 4, 2, 2), (1, 64, 3, 2, 2, 2)]

# --quick, variants after the first: one tail + GQA shape (each new
# specialization is another JIT compile of the Gluon and Triton kernels).
QUICK_CHECKS = [(1, 190, 517, 4, 2, 0)]


def setup_paths():
    for p in (REPO, REPO / "test" / "gpu"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def t_ms(fn):
    import triton
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def forward(qt, kt, vt, causal, scale):
    """(o [B, S, H, D], natural-log lse [B, H, S]) from SDPA's flash forward: realistic inputs to time on."""
    import torch
    with torch.no_grad():
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt, 0.0, bool(causal), False,
                                                                    scale=scale)[:2]
    return o.transpose(1, 2), lse[..., :qt.shape[2]].contiguous()


def gluon_bwd(variant, do, q, k, v, o, lse, scale, causal_type, out=None):
    from python.jit.flash_bwd_hopper import attn_bwd_hopper_jit
    return attn_bwd_hopper_jit(do, q, k, v, o, lse, scale, causal_type, VARIANTS[variant][q.shape[-1]], out=out)


def check(variant, dtype, D, shape, seed):
    """rel_err of dq/dk/dv against the float64 reference; raises on a failure."""
    import torch
    from flash_reference import GRAD_TOL, attention_ref, rel_err

    B, Sq, Sk, Hq, Hk, ct = shape
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    mk = lambda S, H: torch.randn(B, S, H, D, device=DEVICE, dtype=dtype, generator=g)  # noqa: E731
    q, k, v, do = mk(Sq, Hq), mk(Sk, Hk), mk(Sk, Hk), mk(Sq, Hq)
    scale = 1.0 / math.sqrt(D)
    qr, kr, vr = (t.double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = attention_ref(qr, kr, vr, scale, ct)
    grads = torch.autograd.grad(ref, (qr, kr, vr), do.double())
    o = ref.detach().to(dtype)
    lse = ref_lse.detach().float().contiguous()
    out = tuple(torch.full_like(t, float("nan")) for t in (q, k, v))
    got = gluon_bwd(variant, do, q, k, v, o, lse, scale, ct, out=out)
    torch.cuda.synchronize()
    errs = {}
    for name, x, r in zip(("dq", "dk", "dv"), got, grads):
        errs[name] = rel_err(x, r) if torch.isfinite(x).all() else float("nan")
    bad = [n for n, e in errs.items() if not e < GRAD_TOL[dtype]]
    return errs, bad


def run_checks(variants, dtypes, head_dims, causals, quick):
    import torch

    rows, failures = [], 0
    for variant in variants:
        for dname, dtype in dtypes:
            for D in (d for d in head_dims if d in VARIANTS[variant]):
                subset = CHECK_SHAPES if not quick or variant == variants[0] else QUICK_CHECKS
                shapes = [s for s in subset if (s[5] != 0) in [c != 0 for c in causals]]
                shapes = shapes + [(1, 1024, 1024, HIDDEN // D, HIDDEN // D, c) for c in causals]
                for i, shape in enumerate(shapes):
                    r = {"variant": variant, "dtype": dname, "D": D, "shape": list(shape)}
                    try:
                        errs, bad = check(variant, dtype, D, shape, seed=1000 + i)
                        r.update(errs, ok=not bad)
                    except Exception as e:  # a launch or compile error is a failed check
                        traceback.print_exc()
                        r.update(ok=False, error=f"{type(e).__name__}: {e}"[-500:])
                        bad = ["error"]
                    failures += not r["ok"]
                    if r["ok"]:
                        print(f"ok   {variant} {dname} D={D} {shape}: "
                              + " ".join(f"{n}={r[n]:.1e}" for n in ("dq", "dk", "dv")), flush=True)
                    else:
                        print(f"FAIL {variant} {dname} D={D} (B, Sq, Sk, Hq, Hk, causal)={shape}: "
                              f"{r.get('error') or {n: r[n] for n in ('dq', 'dk', 'dv')}}", flush=True)
                    rows.append(r)
                    torch.cuda.empty_cache()
    return rows, failures


def timing_rows(variants, dtypes, head_dims, causals, seqlens, failed):
    """failed: variants with a failed check (never the 'best' of a row)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from python.jit.flash_bwd import attn_bwd_jit

    rows = []
    names = [f"gluon_{v}" for v in variants] + ["triton", "flash", "cudnn"]
    print("\nbackward alone, TF/s (2.5x forward FLOPs); ratios: the best correct Gluon variant over each baseline")
    print("| dtype | D | causal | seqlen | " + " | ".join(names) + " | /triton | /flash | /cuDNN | best |")
    print("|" + "---|" * (8 + len(names)))
    for dname, dtype in dtypes:
        for D in head_dims:
            H = HIDDEN // D
            for causal in causals:
                for S in seqlens:
                    B = TOKENS // S
                    scale = 1.0 / math.sqrt(D)
                    q, k, v, do = (torch.randn(B, S, H, D, device=DEVICE, dtype=dtype) for _ in range(4))
                    qt, kt, vt = (t.transpose(1, 2).detach().requires_grad_(True) for t in (q, k, v))
                    o, lse = forward(qt, kt, vt, causal, scale)
                    fl = 2.5 * 4 * B * H * S * S * D / (2 if causal else 1)
                    res = {}
                    for vname in variants:
                        if D not in VARIANTS[vname]:
                            res[f"gluon_{vname}"] = float("nan")
                            continue
                        try:
                            res[f"gluon_{vname}"] = t_ms(lambda: gluon_bwd(vname, do, q, k, v, o, lse, scale, causal))
                        except Exception as e:
                            print(f"gluon_{vname} failed: {type(e).__name__}: {str(e)[-300:]}", flush=True)
                            res[f"gluon_{vname}"] = float("nan")
                    res["triton"] = t_ms(lambda: attn_bwd_jit(do, q, k, v, o, lse, sm_scale=scale,
                                                              causal_type=causal))
                    dot = do.transpose(1, 2)
                    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                        try:
                            with sdpa_kernel(be):
                                out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=bool(causal))
                                res[name] = t_ms(lambda: torch.autograd.grad(out, (qt, kt, vt), dot, retain_graph=True))
                            del out
                        except RuntimeError as e:
                            print(f"{name} unavailable: {str(e)[:200]}", flush=True)
                            res[name] = float("nan")
                    tf = {n: fl / (ms * 1e-3) / 1e12 for n, ms in res.items()}
                    gluon = {n: tf[n] for n in names
                             if n.startswith("gluon_") and math.isfinite(tf[n]) and n[6:] not in failed}
                    best = max(gluon, key=gluon.get) if gluon else names[0]
                    lead = tf[best]
                    row = {"dtype": dname, "D": D, "causal": causal, "seqlen": S, "batch": B, "heads": H,
                           **{f"{n}_tflops": tf[n] for n in names}, **{f"{n}_ms": res[n] for n in names},
                           "gluon_best": best, "gluon_failed_checks": sorted(failed)}
                    print(f"| {dname} | {D} | {causal} | {S} | " + " | ".join(f"{tf[n]:.0f}" for n in names)
                          + f" | {lead / tf['triton']:.2f} | {lead / tf['flash']:.2f} | {lead / tf['cudnn']:.2f} | {best[6:]} |",
                          flush=True)
                    rows.append(row)
                    del q, k, v, do, qt, kt, vt, o, lse
                    torch.cuda.empty_cache()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="bf16 only, seqlens 1024 and 4096, fewer checks")
    ap.add_argument("--dtypes", default="", help="default: bf16,fp16 (--quick: bf16)")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--causal", default="0,1", help="timed causal kinds (1 = top-left; Sq = Sk here)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seqlens", default="", help="timed seqlens (default 512..8192; --quick: 1024,4096)")
    ap.add_argument("--no-checks", action="store_true")
    ap.add_argument("--json", default=str(REPO / "bench/results/flash_bwd_hopper_experiment_sm90.json"))
    args = ap.parse_args(argv)
    setup_paths()
    import torch
    import triton

    from bench.bench_common import commit_id

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("needs an sm_90 GPU")
        return 2
    all_dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    dnames = (args.dtypes or ("bf16" if args.quick else "bf16,fp16")).split(",")
    dtypes = [(n, all_dtypes[n]) for n in dnames]
    head_dims = [int(x) for x in args.head_dims.split(",")]
    causals = [int(x) for x in args.causal.split(",")]
    variants = args.variants.split(",")
    seqlens = ([int(x) for x in args.seqlens.split(",")] if args.seqlens
               else QUICK_SEQLENS if args.quick else SEQLENS)
    t0 = time.time()
    checks, failures = ([], 0) if args.no_checks else run_checks(variants, dtypes, head_dims, causals, args.quick)
    print(f"checks: {len(checks) - failures} passed, {failures} failed ({time.time() - t0:.0f} s)", flush=True)
    t1 = time.time()
    rows = timing_rows(variants, dtypes, head_dims, causals, seqlens, {r["variant"] for r in checks if not r["ok"]})
    print(f"timing: {time.time() - t1:.0f} s")
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "commit": commit_id(short=False), "tokens": TOKENS, "hidden": HIDDEN,
              "variants": {v: {str(d): c for d, c in VARIANTS[v].items()} for v in variants},
              "checks": checks, "check_failures": failures, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    if failures:
        print(f"FAILED: {failures} correctness checks (see FAIL lines); timings of a failing variant mean nothing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
