"""One MoE GEMM call between cudaProfilerStart/Stop, for ncu (bench/experiments/ncu_moe_gemm.sh):
where the bf16 Mixtral-like GEMM1 at M=4096 loses to torch._grouped_mm (issue 18.1).

    python bench/experiments/moe_gemm_one_call.py --kernel triton|gluon|grouped_mm [--layer mixtral] [--gemm 1]
                                                  [--M 4096] [--quant bf16]

triton: fused_moe_kernel (JIT) with the sm_90 database's config for this entry (the
rule's default if none); gluon: fused_moe_gemm_hopper (JIT, the rule's default or the
Gluon database's entry); grouped_mm: torch._grouped_mm on the same rows, pre-sorted by
expert. Random routing (python/tune_moe.GemmCase), checked against its float32
reference before the profiled call.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from profiled_call import profile_one_call  # noqa: E402


def db_config(rule_name, functional_name, bins):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tuning", "sm_90", rule_name + ".json")
    if not os.path.exists(path):
        return None
    for e in json.load(open(path))["entries"]:
        if e["functional"] == functional_name and e["bins"] == bins:
            return e["config"]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", choices=["triton", "gluon", "grouped_mm"], required=True)
    ap.add_argument("--layer", default="mixtral")
    ap.add_argument("--gemm", type=int, default=1)
    ap.add_argument("--M", type=int, default=4096)
    ap.add_argument("--quant", default="bf16")
    args = ap.parse_args()
    import torch

    from python.kernel_rules import functional_name
    from python.tune_moe import GemmCase
    from python.tune_moe_gluon import gluon_entry, runner
    from tritonsrc.moe import configs as C

    spec_block = C.block_size_m(args.M, topk={"mixtral": 2, "deepseek": 8}[args.layer],
                                num_experts={"mixtral": 8, "deepseek": 256}[args.layer])
    case = GemmCase(args.layer, args.gemm, args.M, args.quant, spec_block)
    if args.kernel == "triton":
        rule = case.rule
        cfg = db_config(rule.name, functional_name(case.functional), case.bins) or dict(
            rule.tuning.default(case.functional, 90))
        run = lambda: case.run(cfg)  # noqa: E731
        print("triton config", cfg, "error", case.error(cfg))
    elif args.kernel == "gluon":
        rule, f, bins = gluon_entry(args.layer, args.gemm, args.M, args.quant)
        cfg = db_config(rule.name, functional_name(f), bins) or dict(rule.tuning.default(f, 90))
        go = runner(case, args.quant, rule)
        run = lambda: go(cfg)  # noqa: E731
        print("gluon config", cfg, "error", case.error(cfg, go))
    else:
        flat = case.ids.reshape(-1).long()
        order = flat.argsort(stable=True)
        offs = torch.bincount(flat, minlength=case.shape["E"]).cumsum(0).to(torch.int32)
        a = case.a[order // case.top_k].contiguous()
        bt = case.b.transpose(1, 2)
        out = torch.empty(a.shape[0], case.shape["N"], device="cuda", dtype=a.dtype)
        run = lambda: out.copy_(torch._grouped_mm(a, bt, offs=offs))  # noqa: E731
        run()
        err = ((out.float() - case.ref[order]).norm() / case.ref.norm()).item()
        print("grouped_mm error", err)
    profile_one_call(run)


if __name__ == "__main__":
    main()
