"""Experiment (issue 18, decode roofline): the decode GEMM tiles (BLOCK_SIZE_M 16)
with GROUP_SIZE_M 1 (an expert's M blocks each sweep all N tiles, one after the
other: a weight tile read again from DRAM by the expert's second block) against
16 (the blocks of one N tile run next to each other: the second read hits L2),
on the operator's operands (python/tune_moe.GemmCase: random routing, the
database's config otherwise), the cubins the build ships (AOTRITON_JIT_AOT_FORM=1).
`--block-sizes 16,32` also times 32-row tiles (an expert with 17-32 slots then has one
block, so its weights are read once whatever the order; the rule's default config there):
Mixtral-like fp8 at M = 32-64 is 0.77-0.90 of the roofline with 16-row tiles.

    python3 bench/experiments/moe_decode_group.py [--tokens 16,32,64] [--quants bf16,fp8_tensor,fp8_block]
                                                  [--block-sizes 16,32]

Prints per GEMM: M blocks in use, kernel us for each group size, the touched
weights' bytes over the measured copy bandwidth (roofline fraction).
"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AOTRITON_JIT_AOT_FORM", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="mixtral")
    ap.add_argument("--tokens", default="16,32,64")
    ap.add_argument("--quants", default="bf16,fp8_tensor,fp8_block")
    ap.add_argument("--block-sizes", default="", help="BLOCK_SIZE_M values (default: the operator's)")
    args = ap.parse_args()

    import torch
    import triton
    from python import tune_shared as T
    from python.tune_moe import GemmCase
    from tritonsrc.moe import configs as C
    sys.path.insert(0, str(REPO / "bench/experiments"))
    from moe_fp8_gluon import db_config

    bw = T.copy_bandwidth(torch, triton)
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s")
    print("| M | quant | GEMM | BLOCK_SIZE_M | M blocks | config | G=1 us | G=16 us | roofline G=1 | G=16 | err G=16 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for M in map(int, args.tokens.split(",")):
        for quant in args.quants.split(","):
            for gemm, bm in [(g, b) for g in (1, 2) for b in (map(int, args.block_sizes.split(","))
                                                              if args.block_sizes else [C.block_size_m(M)])]:
                case = GemmCase(args.layer, gemm, M, quant, bm)
                blocks = int(case.ntpp.item()) // bm
                cfg, src = db_config(case)
                used = case.ids.unique().numel()
                w_bytes = used * (case.b[0].numel() * case.b.element_size() +
                                  (case.b_s[0].numel() * 4 if case.b_s is not None and case.b_s.dim() > 1 else 0))
                roof_us = w_bytes / bw * 1e6
                us, errs = {}, {}
                for g in (1, 16):
                    c = dict(cfg, GROUP_SIZE_M=g)
                    errs[g] = case.error(c)
                    us[g] = T.kernel_ms(lambda c=c: case.run(c)) * 1e3
                print(f"| {M} | {quant} | {gemm} | {bm} | {blocks} | {src} | {us[1]:.1f} | {us[16]:.1f} | "
                      f"{roof_us / us[1]:.2f} | {roof_us / us[16]:.2f} | {errs[16]:.1e} |", flush=True)
                del case
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
