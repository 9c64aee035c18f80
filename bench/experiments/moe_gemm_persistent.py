"""Experiment (issue 18.1): the persistent form of the bf16 Gluon MoE GEMM
(tritonsrc/moe/grouped_gemm_hopper_persistent.py) against the shipped Gluon kernel,
the Triton kernel (the build's cubin for the tuning database's config) and
torch._grouped_mm on the same routed rows, on the operator's operands
(python/tune_moe.GemmCase, align block 128), each output poisoned and checked
against float32 of the same operands; bad expert ids (-1, E, 2^30) must write zeros.

    python3 bench/experiments/moe_gemm_persistent.py [--cases mixtral:4096,mixtral:512,deepseek:4096]
        [--routing balanced,random] [--json F]
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AOTRITON_JIT_AOT_FORM", "1")

PERSISTENT_CONFIGS = [dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=g, NUM_STAGES=s, num_warps=4)
                      for g, s in ((8, 4), (16, 4), (8, 3))]


def launch_persistent(case, cfg, num_programs):
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper_persistent
    invoke_grouped_gemm_hopper_persistent(case.a, case.b, case.c, case.weights, case.sorted, case.expert_ids, case.ntpp,
                                          case.top_k, cfg, mul_routed_weight=case.mul, num_programs=num_programs)


def balance(case, torch, mj):
    """Balanced routing: slot s goes to expert s % E (every expert gets M * topk / E slots)."""
    M, topk, E = case.shape["M"], case.shape["topk"], case.shape["E"]
    case.ids = (torch.arange(M * topk, device="cuda") % E).reshape(M, topk).to(torch.int32)
    case.sorted, case.expert_ids, case.ntpp = mj.moe_align_block_size(case.ids, 128, E)
    case.ref = case._reference()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="mixtral:4096,mixtral:512,deepseek:4096")
    ap.add_argument("--routing", default="balanced,random")
    ap.add_argument("--gemms", default="1,2")
    ap.add_argument("--json", default=str(REPO / "bench/results/moe_gemm_persistent_sm90.json"))
    args = ap.parse_args()

    import torch
    import triton
    from python import tune_shared as T
    from python.jit import moe as mj
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper
    from python.tune_moe import GemmCase
    from bench.experiments.moe_fp8_gluon import db_config, rel_err

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    print("| layer | GEMM | M | routing | kernel | config | err | ms | TF/s | / grouped_mm |\n" + "|---" * 10 + "|",
          flush=True)
    for spec in args.cases.split(","):
        layer, M = spec.split(":")
        M = int(M)
        for gemm in map(int, args.gemms.split(",")):
            for routing in args.routing.split(","):
                case = GemmCase(layer, gemm, M, "bf16", 128)
                if routing == "balanced":
                    balance(case, torch, mj)
                flops = 2 * case.c.shape[0] * case.shape["N"] * case.shape["K"]
                flat = case.ids.reshape(-1).long()
                order = flat.argsort(stable=True)
                offs = torch.bincount(flat, minlength=case.shape["E"]).cumsum(0).to(torch.int32)
                a_sorted = case.a[order // case.top_k].contiguous()
                bt = case.b.transpose(1, 2)
                gm_ms = T.kernel_ms(lambda: torch._grouped_mm(a_sorted, bt, offs=offs))
                got = torch._grouped_mm(a_sorted, bt, offs=offs)
                if case.mul:  # grouped_mm has no routed weight: GEMM2's reference includes it
                    got = got.float() * case.weights.reshape(-1)[order, None]
                gm_err = ((got.float() - case.ref[order]).norm() / case.ref.norm()).item()
                runs = []
                cfg, src = db_config(case)
                runs.append(("triton", src, lambda cfg=cfg: case.run(cfg)))
                hcfg, hsrc = db_config(case, "fused_moe_gemm_hopper")
                runs.append(("gluon", hsrc, lambda: invoke_grouped_gemm_hopper(
                    case.a, case.b, case.c, case.weights, case.sorted, case.expert_ids, case.ntpp, case.top_k, hcfg,
                    mul_routed_weight=case.mul)))
                for p in PERSISTENT_CONFIGS:
                    runs.append(("persistent", f"g{p['GROUP_M']}_s{p['NUM_STAGES']}",
                                 lambda p=p: launch_persistent(case, p, sms)))

                def record(kernel, name, err, ms):
                    tf = flops / (ms * 1e-3) / 1e12 if ms == ms else float("nan")
                    rows.append(dict(layer=layer, gemm=gemm, M=M, routing=routing, kernel=kernel, config=name,
                                     err=err, ms=ms, tflops=tf, vs_grouped_mm=gm_ms / ms))
                    print(f"| {layer} | {gemm} | {M} | {routing} | {kernel} | {name} | {err:.2e} | {ms:.4f} | "
                          f"{tf:.1f} | {gm_ms / ms:.3f} |", flush=True)

                record("grouped_mm", "-", gm_err, gm_ms)
                for kernel, name, run in runs:
                    try:
                        case.c.fill_(float("nan"))
                        run()
                        torch.cuda.synchronize()
                        err = rel_err(torch, case.c, case.ref)
                        ms = T.kernel_ms(run)
                    except Exception as e:  # noqa: BLE001 - an experiment reports and goes on
                        print(f"  {kernel} {name}: {str(e).splitlines()[0][:200]}", flush=True)
                        err, ms = float("inf"), float("nan")
                    record(kernel, name, err, ms)
                # Bad expert ids: the blocks' rows must be zeros, every other row still right.
                if routing == "random" and gemm == 1:
                    bad = case.expert_ids.clone()
                    nblk = int(case.ntpp.item()) // 128
                    for i, v in zip((0, nblk // 2, nblk - 1), (-1, case.shape["E"], 2 ** 30)):
                        case.expert_ids[i] = v
                    case.c.fill_(float("nan"))
                    launch_persistent(case, PERSISTENT_CONFIGS[0], sms)
                    torch.cuda.synchronize()
                    slots = case.sorted[:nblk * 128].reshape(nblk, 128)
                    hit = torch.zeros(case.c.shape[0], dtype=torch.bool, device="cuda")
                    for i in (0, nblk // 2, nblk - 1):
                        s = slots[i][slots[i] < case.c.shape[0]].long()
                        hit[s] = True
                    zeros_ok = bool((case.c[hit] == 0).all())
                    rest = rel_err(torch, case.c[~hit], case.ref[~hit])
                    print(f"  bad expert ids: zero rows {zeros_ok}, other rows err {rest:.2e}", flush=True)
                    rows.append(dict(layer=layer, gemm=gemm, M=M, check="bad_expert_ids", zeros=zeros_ok, err=rest))
                    case.expert_ids.copy_(bad)
                del case, a_sorted
                torch.cuda.empty_cache()
    meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                commit=os.environ.get("AOTRITON_COMMIT", "unknown"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(dict(meta, rows=rows), indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], Path(args.json).name).write_text(json.dumps(dict(meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
