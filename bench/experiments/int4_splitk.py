"""Split-K for the int4 w4a16 decode GEMM2 (issue 13; docs/notes-moe-perf.md).

GEMM2 of the Mixtral-like layer at decode sizes (2 x 4096 output columns per
token, K 14336) has 128 tiles of 64 columns for 132 SMs; SPLIT_K > 1 gives each
tile SPLIT_K CTAs over slices of K (grouped_gemm_wq.py writes the partials to C
rows slot * SPLIT_K + s; the operator would reduce them in moe_sum). This times
the production kernel through the JIT with the sm_90 database's config for
the bin and SPLIT_K 1/2/4/8 (CUDA-graph replay), with fp32 partials and the
reduction (torch sum over the splits) timed with it, and checks the reduced
result against SPLIT_K 1. Prints us and the fraction of the HBM roofline of
the touched experts' packed weights, scales and zero points.

    python3 bench/experiments/int4_splitk.py [--tokens 1,8,64] [--splits 1,2,4,8]
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,8,64")
    ap.add_argument("--splits", default="1,2,4,8")
    ap.add_argument("--json", default=str(REPO / "bench/results/int4_splitk_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import torch
    import triton

    from bench_common import commit_id, copy_bandwidth, split_k_row, write_experiment
    from moe_coverage_quant import INT4_GROUP, LAYER, int4_layer
    from python.jit import moe as mj
    from python.jit import moe_quant as mq
    from tritonsrc.moe import configs as C

    E, topk, K, N = LAYER["E"], LAYER["topk"], LAYER["N"], LAYER["K"]  # GEMM2: K = the intermediate N
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    _, w2, _, s2, _, z2 = int4_layer(torch, dev, gen)  # GEMM2's: [E, N, K // 2] with N, K as named here
    per_expert = sum(t[0].numel() * t.element_size() for t in (w2, s2, z2))
    bw = copy_bandwidth(dev)
    db = json.loads((REPO / "tuning/sm_90/fused_moe_gemm_wq.json").read_text())["entries"]

    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}, commit {commit_id()}; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s; GEMM2 int4 g{INT4_GROUP} zp, N {N}, K {K}, E {E}, top-{topk}")
    print("| M | config | SPLIT_K | GEMM us | GEMM + reduce us | roofline (GEMM + reduce) | max rel diff vs 1 |\n"
          "|---|---|---|---|---|---|---|")
    rows = []
    for M in [int(m) for m in args.tokens.split(",")]:
        x = torch.randn(M * topk, K, device=dev, dtype=torch.bfloat16)  # GEMM2's input: one row per slot
        ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
        w = torch.full((M, topk), 1.0 / topk, device=dev)
        sid, eid, ntpp = mj.moe_align_block_size(ids, 16, E)
        entry = next((e for e in db if e["shape"].get("M") == M and e["shape"].get("gemm") == 2), None)
        cfg = dict(entry["config"]) if entry else C.wq_default_config(M, 4)
        cfg.update(BLOCK_SIZE_M=16)
        touched = torch.unique(ids).numel() * per_expert
        base = None
        for split in [int(s) for s in args.splits.split(",")]:
            c = torch.empty(M * topk * split, N, device=dev, dtype=torch.float32)
            run_cfg = dict(cfg, SPLIT_K=split)

            def gemm():
                mq.invoke_grouped_gemm_wq(x, w2, c, w.flatten(), sid, eid, ntpp, 1, dict(run_cfg), 4, s2, z2,
                                          INT4_GROUP, mul_routed_weight=True)

            def gemm_reduce():
                gemm()
                return c.view(M * topk, split, N).sum(1)

            r, out = split_k_row(dict(M=M), cfg, split, gemm, gemm_reduce, base, touched, bw)
            base = out if base is None else base
            rows.append(r)
    write_experiment(args.json, rows, bw)


if __name__ == "__main__":
    main()
