"""Split-K of fused_experts' decode GEMM2 for 16-bit and fp8 weights (issue 18.3), through the JIT.

The operator splits GEMM2 four ways (configs.GEMM_SPLIT_K) when its tiles leave SMs idle
(v2src/ops/moe_fused.cc split_k_for); the tuning database says Mixtral-like fp8 GEMM2 at
M=1 runs at ~0.87 of the copy bandwidth split four ways, against ~0.94 for GEMM1. This
times the production kernel (grouped_gemm.fused_moe_kernel) with the database's config
for the bin and SPLIT_K 1/2/4/8 in CUDA-graph replays, with the reduction of the partial
rows (moe_sum's kernel, BLOCK_R rows per load) timed with it, and checks each reduced
result against SPLIT_K 1. Prints us and the fraction of the HBM roofline of the touched
experts' GEMM2 weights (+ scales).

    python3 bench/experiments/gemm2_splitk.py [--cases mixtral:fp8_tensor:1,...] [--splits 1,2,4,8]
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"mixtral": dict(E=8, topk=2, K=4096, N=14336), "deepseek": dict(E=256, topk=8, K=7168, N=2048)}
QUANTS = {"bf16": 0, "fp8_tensor": 1, "fp8_block": 2}


def db_config(db, layer, quant, M, split):
    """The database entry's config for GEMM2 of (layer, quant, M), the split functional's
    when there is one, else the unsplit one's."""
    def match(e, s):
        return (e["shape"].get("layer") == layer and e["shape"].get("gemm") == 2 and e["shape"].get("M") == M
                and f"QUANT-{QUANTS[quant]}__" in e["functional"] and f"SPLIT_K-{s}__" in e["functional"]
                and "BLOCK_SIZE_M-16__" in e["functional"])
    e = next((e for e in db if match(e, split)), None) or next((e for e in db if match(e, 1)), None)
    return dict(e["config"]) if e else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="mixtral:fp8_tensor:1,mixtral:fp8_block:1,mixtral:bf16:1,"
                                       "mixtral:fp8_tensor:8,deepseek:fp8_tensor:1,deepseek:fp8_block:1")
    ap.add_argument("--splits", default="1,2,4,8")
    ap.add_argument("--json", default=str(REPO / "bench/results/gemm2_splitk_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import torch
    import triton

    from bench_common import commit_id, copy_bandwidth, split_k_row, write_experiment
    from python.jit import moe as mj

    dev = "cuda"
    bw = copy_bandwidth(dev)
    db = json.loads((REPO / "tuning/sm_90/fused_moe_gemm.json").read_text())["entries"]
    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}, commit {commit_id()}; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s")
    print("| case | config | SPLIT_K | GEMM us | GEMM + reduce us | roofline (GEMM + reduce) | max rel diff vs 1 |\n"
          "|---|---|---|---|---|---|---|")
    rows = []
    for case in args.cases.split(","):
        layer, quant, M = case.split(":")
        M = int(M)
        s = LAYERS[layer]
        E, topk, K, N = s["E"], s["topk"], s["K"], s["N"]  # GEMM2: [slots, N] @ w2[e] [K, N]^T
        gen = torch.Generator(device=dev).manual_seed(M)
        ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
        w = torch.rand(M, topk, device=dev, generator=gen) + 0.1
        a = torch.randn(M * topk, N, device=dev, generator=gen)
        w2 = torch.randn(E, K, N, device=dev, generator=gen, dtype=torch.bfloat16) / N ** 0.5
        a_s = b_s = None
        if quant == "fp8_tensor":
            a_s = a.abs().amax().reshape(1) / 448
            b_s = torch.rand(E, device=dev, generator=gen) * 1e-3 + 1e-4
            a, w2 = (a / a_s).to(torch.float8_e4m3fn), (w2 * 64).to(torch.float8_e4m3fn)
        elif quant == "fp8_block":
            a_s = torch.rand(M * topk, triton.cdiv(N, 128), device=dev, generator=gen) * 1e-2 + 1e-3
            b_s = torch.rand(E, triton.cdiv(K, 128), triton.cdiv(N, 128), device=dev, generator=gen) * 1e-3 + 1e-4
            a, w2 = (a * 16).to(torch.float8_e4m3fn), (w2 * 64).to(torch.float8_e4m3fn)
        else:
            a = a.to(torch.bfloat16)
        sid, eid, ntpp = mj.moe_align_block_size(ids, 16, E)
        per_expert = w2[0].numel() * w2.element_size() + (b_s[0].numel() * 4 if b_s is not None else 0)
        touched = torch.unique(ids).numel() * per_expert
        base = None
        for split in [int(x) for x in args.splits.split(",")]:
            cfg = db_config(db, layer, quant, M, split)
            if cfg is None:
                print(f"| {case} | no database entry | {split} | | | | |")
                break
            cfg.update(BLOCK_SIZE_M=16, SPLIT_K=split)
            c = torch.empty(M * topk * split, K, device=dev, dtype=torch.bfloat16)

            def gemm():
                mj.invoke_grouped_gemm(a, w2, c, w.flatten(), sid, eid, ntpp, 1, dict(cfg), mul_routed_weight=True,
                                       quant=QUANTS[quant], a_scale=a_s, b_scale=b_s)

            def gemm_reduce():
                gemm()
                return mj.moe_sum(c.view(M, topk * split, K), block=1024)

            r, out = split_k_row(dict(case=case), cfg, split, gemm, gemm_reduce, base, touched, bw)
            base = out if base is None else base
            rows.append(r)
    write_experiment(args.json, rows, bw)


if __name__ == "__main__":
    main()
