"""GEMM1 + act_and_mul (what fused_experts runs for 16-bit weights on the Triton route) against
GEMM1 with the activation in its epilogue (gated_gemm1_kernel.py), through the JIT, no build.

Checks the gated kernel's output against the two-kernel path (bitwise or not, and the largest
difference relative to the output's largest value, which must stay within a 16-bit rounding),
then times both in CUDA-graph replays (median) at decode and prefill sizes of the
Mixtral-like layer (E=8, top-2, K=4096, N=14336, bf16), with the database's GEMM1 config for the
bin for the two-kernel path and the same tile for the gated one (its two accumulators want
half the columns: BLOCK_SIZE_N / 2 is timed too).

    python3 bench/experiments/gated_gemm1.py [--tokens 1,64,512,4096] [--json ...]
    TRITON_INTERPRET=1 python3 bench/experiments/gated_gemm1.py --smoke   (CPU: the check only)
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(Path(__file__).resolve().parent)]

LAYER = dict(E=8, topk=2, K=4096, N=14336)
SMOKE = dict(E=3, topk=2, K=72, N=40)  # K, N not multiples of the tiles


def two_kernel(mj, x, w1, cache13, cache2, sid, eid, ntpp, topk, cfg, activation):
    """GEMM1 into cache13, then act_and_mul into cache2 (the operator's Triton route)."""
    mj.invoke_grouped_gemm(x, w1, cache13, None, sid, eid, ntpp, topk, dict(cfg))
    from python import rules_moe as R
    from python.jit_launch import View, launch
    n = cache2.shape[1]
    launch(R.act_and_mul, dict(out_ptr=View(cache2, row=0), in_ptr=View(cache13, row=0), n_rows=cache2.shape[0],
                               n_cols=n), dict(ACTIVATION=activation), dict(BLOCK=1024 if n >= 1024 else 64))


def gated(x, w1, cache2, sid, eid, ntpp, topk, cfg, activation):
    import triton
    from gated_gemm1_kernel import gated_gemm1_kernel
    E, n2, K = w1.shape
    N = n2 // 2
    grid = (triton.cdiv(sid.numel(), cfg["BLOCK_SIZE_M"]) * triton.cdiv(N, cfg["BLOCK_SIZE_N"]), )
    opts = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    gated_gemm1_kernel[grid](x, w1, cache2, sid, eid, ntpp, N, K, sid.numel(), cache2.shape[0], topk, x.stride(0),
                             w1.stride(0), w1.stride(1), cache2.stride(0), E, ACTIVATION=activation,
                             BLOCK_SIZE_M=cfg["BLOCK_SIZE_M"], BLOCK_SIZE_N=cfg["BLOCK_SIZE_N"],
                             BLOCK_SIZE_K=cfg["BLOCK_SIZE_K"], GROUP_SIZE_M=cfg["GROUP_SIZE_M"], **opts)


def run_case(torch, mj, spec, M, cfg, dev, dtype, activation, gen, timing):
    """(bitwise, max relative difference, two-kernel us, gated us, gated half-width us)."""
    E, topk, K, N = spec["E"], spec["topk"], spec["K"], spec["N"]
    x = torch.randn(M, K, generator=gen, device=dev).to(dtype)
    w1 = (torch.randn(E, 2 * N, K, generator=gen, device=dev) / K ** 0.5).to(dtype)
    ids = torch.rand(M, E, generator=gen, device=dev).topk(topk, dim=-1).indices.to(torch.int32)
    sid, eid, ntpp = mj.moe_align_block_size(ids, cfg["BLOCK_SIZE_M"], E)
    cache13 = torch.empty(M * topk, 2 * N, device=dev, dtype=dtype)
    ref = torch.full((M * topk, N), float("nan"), device=dev, dtype=dtype)
    out = torch.full((M * topk, N), float("nan"), device=dev, dtype=dtype)
    two_kernel(mj, x, w1, cache13, ref, sid, eid, ntpp, topk, cfg, activation)
    half = dict(cfg, BLOCK_SIZE_N=max(16, cfg["BLOCK_SIZE_N"] // 2))
    # The gated kernel holds two weight tiles a stage: a prefill tile may not fit shared
    # memory at full width (Mixtral M=512's database tile: 240 KB); then only half width runs.
    forms = []
    for form in (cfg, half):
        try:
            out.fill_(float("nan"))
            gated(x, w1, out, sid, eid, ntpp, topk, form, activation)
            forms.append(form)
        except Exception as e:  # noqa: BLE001 - triton's OutOfResources, reported as a missing column
            if "out of resource" not in str(e):
                raise
            forms.append(None)
    checked = next(f for f in forms if f is not None)
    gated(x, w1, out, sid, eid, ntpp, topk, checked, activation)
    bitwise = torch.equal(out, ref)
    diff = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    if not timing:
        return bitwise, diff, None, None, None
    import triton

    def t(fn):
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3

    def t_gated(form):
        return float("nan") if form is None else t(lambda: gated(x, w1, out, sid, eid, ntpp, topk, form, activation))
    return (bitwise, diff, t(lambda: two_kernel(mj, x, w1, cache13, ref, sid, eid, ntpp, topk, cfg, activation)),
            t_gated(forms[0]), t_gated(forms[1]))


def db_gemm1_config(M):
    """The sm_90 database's bf16 GEMM1 config of the Mixtral-like layer for the bin of M."""
    from tritonsrc.moe import configs as C
    db = json.loads((REPO / "tuning/sm_90/fused_moe_gemm.json").read_text())["entries"]
    for e in db:
        s = e["shape"]
        if (s.get("layer"), s.get("gemm"), s.get("M")) == ("mixtral", 1, M) and "QUANT-0__" in e["functional"]:
            bm = int(e["functional"].split("BLOCK_SIZE_M-")[1].split("__")[0])
            return dict(e["config"], BLOCK_SIZE_M=bm)
    return dict(C.gemm_config(M))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,64,512,4096")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, the check only (CPU interpreter)")
    ap.add_argument("--json", default=str(REPO / "bench/results/gated_gemm1_sm90.json"))
    args = ap.parse_args(argv)
    import torch

    from python.jit import moe as mj

    gen_dev = "cpu" if args.smoke else "cuda"
    bad = 0
    if args.smoke:
        for M, dtype, act in [(5, torch.float16, 0), (9, torch.float32, 2), (4, torch.float16, 1)]:
            cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=16, BLOCK_SIZE_K=32, GROUP_SIZE_M=2)
            bitwise, diff, *_ = run_case(torch, mj, SMOKE, M, cfg, gen_dev, dtype, act,
                                         torch.Generator(device=gen_dev).manual_seed(M), False)
            ok = diff <= (2 ** -10 if dtype == torch.float16 else 1e-6)
            bad += not ok
            print(f"{'ok' if ok else 'FAIL'} M={M} {dtype} activation {act}: bitwise {bitwise}, max rel diff {diff:.1e}")
        return 1 if bad else 0
    from bench_common import device_line, write_experiment
    print(device_line())
    print("| M | GEMM1 config | bitwise | max rel diff | GEMM1 + act_and_mul us | gated us | gated, half-wide tile us |\n"
          "|---|---|---|---|---|---|---|")
    rows = []
    for M in [int(m) for m in args.tokens.split(",")]:
        cfg = db_gemm1_config(M)
        bitwise, diff, t2, tg, th = run_case(torch, mj, LAYER, M, cfg, "cuda", torch.bfloat16, 0,
                                             torch.Generator(device="cuda").manual_seed(M), True)
        bad += diff > 2 ** -7
        rows.append(dict(M=M, config=cfg, bitwise=bitwise, max_rel_diff=diff, two_kernel_us=t2, gated_us=tg,
                         gated_half_us=th))
        print(f"| {M} | {json.dumps(cfg)} | {'yes' if bitwise else 'no'} | {diff:.1e} | {t2:.1f} | {tg:.1f} | "
              f"{th:.1f} |", flush=True)
    write_experiment(args.json, rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
