"""Experiment (issue 18, fp8 at 1.5x bf16): the warp-specialized Gluon fp8 grouped
GEMM (tritonsrc/moe/grouped_gemm_hopper_fp8.py, JIT) against fused_moe_gemm's
fp8 and bf16 paths (the cubins the build ships for the tuning database's
config: AOTRITON_JIT_AOT_FORM=1) and the bf16 Gluon kernel, on the operator's
own operands (python/tune_moe.GemmCase: random routing, moe_align block 128,
activations quantized as fused_experts does), each checked against the float32
product of the same quantized operands (outputs poisoned first).

    python3 bench/experiments/moe_fp8_gluon.py [--cases mixtral:4096,mixtral:512,deepseek:4096]
        [--quants bf16,fp8_tensor,fp8_block,fp8_channel] [--json F]

Prints TF/s per (layer, GEMM, M) and the ratios the issue asks for: fp8 / bf16
(best of each) at the same GEMM. Needs an sm_90 GPU.
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AOTRITON_JIT_AOT_FORM", "1")

GLUON_FP8_CONFIGS = [dict(BLOCK_M=128, BLOCK_N=n, BLOCK_K=128, GROUP_M=g, NUM_STAGES=s, num_warps=4)
                     for n, g, s in ((128, 8, 5), (256, 8, 3), (256, 8, 4), (256, 16, 4))]


def db_config(case, rule_name="fused_moe_gemm"):
    """The tuning database's config for the case's (functional, bins), else the rule default."""
    from python import build_plan, rules
    from python.kernel_rules import functional_name
    rule = next(r for r in rules.KERNELS if r.name == rule_name)
    for e in build_plan.load_tuning_db(rule_name, 90):
        if e["functional"] == functional_name(case.functional) and list(e["bins"]) == list(case.bins):
            return dict(e["config"]), "db"
    return dict(rule.tuning.default(case.functional, 90)), "default"


def rel_err(torch, c, ref):
    c = c.float()
    if not torch.isfinite(c).all():
        return float("inf")
    return ((c - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="mixtral:4096,mixtral:512,deepseek:4096")
    ap.add_argument("--gemms", default="1,2")
    ap.add_argument("--quants", default="bf16,fp8_tensor,fp8_block")
    ap.add_argument("--gluon-configs", default="",
                    help="only these Gluon fp8 configs, by row name (e.g. n128_g8_s5,n256_g8_s4)")
    ap.add_argument("--json", default=str(REPO / "bench/results/moe_fp8_gluon_sm90.json"))
    ap.add_argument("--persistent", action="store_true",
                    help="also the persistent forms (grouped_gemm_hopper*_persistent.py, one program per SM)")
    args = ap.parse_args()

    import torch
    import triton
    from python import tune_shared as T
    from python.tune_moe import QUANTS, GemmCase
    from python.jit.moe_gemm_hopper import (invoke_grouped_gemm_hopper, invoke_grouped_gemm_hopper_fp8,
                                            invoke_grouped_gemm_hopper_persistent)
    from tritonsrc.moe import configs as C

    rows = []
    print("| layer | GEMM | M | quant | kernel | config | err | ms | TF/s |\n|---|---|---|---|---|---|---|---|---|",
          flush=True)
    for spec in args.cases.split(","):
        layer, M = spec.split(":")
        M = int(M)
        for gemm in map(int, args.gemms.split(",")):
            best = {}
            for quant in args.quants.split(","):
                case = GemmCase(layer, gemm, M, quant, 128)
                flops = 2 * case.c.shape[0] * case.shape["N"] * case.shape["K"]

                def record(kernel, cfg_name, err, ms):
                    tf = flops / (ms * 1e-3) / 1e12 if ms == ms else float("nan")
                    rows.append(dict(layer=layer, gemm=gemm, M=M, quant=quant, kernel=kernel, config=cfg_name,
                                     err=err, ms=ms, tflops=tf))
                    print(f"| {layer} | {gemm} | {M} | {quant} | {kernel} | {cfg_name} | {err:.2e} | {ms:.4f} | "
                          f"{tf:.1f} |", flush=True)
                    if err < 2e-2 and tf == tf:
                        best[quant] = max(best.get(quant, 0.0), tf)

                if quant != "fp8_channel":  # the Triton launcher here takes per-tensor or block A scales only
                    cfg, src = db_config(case)
                    err = case.error(cfg)
                    record("triton", f"{src}:" + "_".join(f"{v}" for v in cfg.values()), err,
                           T.kernel_ms(lambda: case.run(cfg)))
                if quant == "bf16":
                    hcfg, hsrc = db_config(case, "fused_moe_gemm_hopper")
                    if args.persistent:
                        runs_p = [("persistent", lambda: invoke_grouped_gemm_hopper_persistent(
                            case.a, case.b, case.c, case.weights, case.sorted, case.expert_ids, case.ntpp, case.top_k,
                            hcfg, mul_routed_weight=case.mul))]
                    else:
                        runs_p = []
                    runs = runs_p + [(hsrc, lambda: invoke_grouped_gemm_hopper(
                        case.a, case.b, case.c, case.weights, case.sorted, case.expert_ids, case.ntpp, case.top_k,
                        hcfg, mul_routed_weight=case.mul))]
                else:
                    q = QUANTS[quant][1]
                    runs = [(f"n{g['BLOCK_N']}_g{g['GROUP_M']}_s{g['NUM_STAGES']}",
                             lambda g=g: invoke_grouped_gemm_hopper_fp8(
                                 case.a, case.b, case.c, case.a_s, case.b_s, case.weights, case.sorted,
                                 case.expert_ids, case.ntpp, case.top_k, q, g, mul_routed_weight=case.mul))
                            for g in GLUON_FP8_CONFIGS]
                    if args.gluon_configs:
                        runs = [r for r in runs if r[0] in args.gluon_configs.split(",")]
                    if args.persistent:
                        runs += [(f"persistent_n{g['BLOCK_N']}_g{g['GROUP_M']}_s{g['NUM_STAGES']}",
                                  lambda g=g: invoke_grouped_gemm_hopper_fp8(
                                      case.a, case.b, case.c, case.a_s, case.b_s, case.weights, case.sorted,
                                      case.expert_ids, case.ntpp, case.top_k, q, g, mul_routed_weight=case.mul,
                                      num_programs=None))
                                 for g in GLUON_FP8_CONFIGS]
                for name, gluon in runs:
                    case.c.fill_(float("nan"))
                    try:
                        gluon()
                        torch.cuda.synchronize()
                        err = rel_err(torch, case.c, case.ref)
                        ms = T.kernel_ms(gluon)
                    except Exception as e:  # noqa: BLE001 - an experiment reports and goes on
                        print(f"  gluon {name}: {str(e).splitlines()[0][:200]}", flush=True)
                        err, ms = float("inf"), float("nan")
                    record("gluon", name, err, ms)
                del case
                torch.cuda.empty_cache()
            if "bf16" in best:
                print(f"  {layer} GEMM{gemm} M={M}: fp8_tensor/bf16 {best.get('fp8_tensor', 0) / best['bf16']:.2f}x, "
                      f"fp8_block/bf16 {best.get('fp8_block', 0) / best['bf16']:.2f}x (best kernel each)", flush=True)
    meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                commit=os.environ.get("AOTRITON_COMMIT", "unknown"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(dict(meta, rows=rows), indent=1))
    out = os.environ.get("OUT")
    if out:
        Path(out, Path(args.json).name).write_text(json.dumps(dict(meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
