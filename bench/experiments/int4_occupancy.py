"""Is the int4 w4a16 decode GEMM1 short of warps? (issue 13.6; docs/notes-moe-perf.md).

ncu on the H200 (2026-12-05, bench/results/ncu_int4_m1_sm90.txt): the Mixtral-like GEMM1 at
M=1 takes 76.6 us (0.38 of the HBM roofline) with 128 registers per thread, so 4 CTAs of
4 warps per SM (25% occupancy), 3.16 active and 0.72 eligible warps per scheduler: a
latency-bound loop. The tuner's space has no register cap. This times the production
kernel through the JIT with the database's config and variants that put more warps on an
SM: maxnreg 96 / 80 (5 / 6 CTAs), narrower tiles (more CTAs), 8 warps; each checked against
the database config's output. CUDA-graph replays, median.

    python3 bench/experiments/int4_occupancy.py [--tokens 1,8] [--json ...]
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VARIANTS = [  # changes to the database config
    {}, {"maxnreg": 96}, {"maxnreg": 80}, {"maxnreg": 64},
    {"BLOCK_SIZE_N": 64}, {"BLOCK_SIZE_N": 64, "maxnreg": 96},
    {"num_warps": 8}, {"num_stages": 4}, {"num_stages": 4, "maxnreg": 96},
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,8")
    ap.add_argument("--json", default=str(REPO / "bench/results/int4_occupancy_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import torch
    import triton

    from bench_common import commit_id, copy_bandwidth, write_experiment
    from moe_coverage_quant import INT4_GROUP, LAYER, int4_layer
    from python.jit import moe as mj
    from python.jit import moe_quant as mq
    from tritonsrc.moe import configs as C

    E, topk, K, N = LAYER["E"], LAYER["topk"], LAYER["K"], LAYER["N"]  # GEMM1: [M, K] @ w1[e] [2N, K]^T
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    w1, _, s1, _, z1, _ = int4_layer(torch, dev, gen)
    per_expert = sum(t[0].numel() * t.element_size() for t in (w1, s1, z1))
    bw = copy_bandwidth(dev)
    db = json.loads((REPO / "tuning/sm_90/fused_moe_gemm_wq.json").read_text())["entries"]
    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}, commit {commit_id()}; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s; GEMM1 int4 g{INT4_GROUP} zp, 2N {2 * N}, K {K}, E {E}, top-{topk}")
    print("| M | config | us | roofline | max rel diff vs database config |\n|---|---|---|---|---|")
    rows = []
    for M in [int(m) for m in args.tokens.split(",")]:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
        sid, eid, ntpp = mj.moe_align_block_size(ids, 16, E)
        entry = next((e for e in db if e["shape"].get("M") == M and e["shape"].get("gemm") == 1), None)
        base_cfg = dict(entry["config"]) if entry else C.wq_default_config(M, 4)
        touched = torch.unique(ids).numel() * per_expert
        base = None
        for change in VARIANTS:
            cfg = dict(base_cfg, BLOCK_SIZE_M=16, **change)
            c = torch.empty(M * topk, 2 * N, device=dev, dtype=torch.bfloat16)

            def gemm():
                mq.invoke_grouped_gemm_wq(x, w1, c, None, sid, eid, ntpp, topk, dict(cfg), 4, s1, z1, INT4_GROUP)

            try:
                gemm()
                torch.cuda.synchronize()
            except Exception as e:  # a variant the compiler refuses (shared memory, registers)
                print(f"| {M} | {change or 'database'} | failed: {type(e).__name__} | | |")
                continue
            out = c.float().clone()
            base = out if base is None else base
            diff = ((out - base).abs().max() / base.abs().max()).item()
            t = triton.testing.do_bench_cudagraph(gemm, rep=100, return_mode="median") * 1e3
            r = dict(M=M, change=change, config=cfg, us=t, roofline=touched / bw * 1e6 / t, max_rel_diff=diff)
            rows.append(r)
            print(f"| {M} | {change or 'database ' + json.dumps(base_cfg)} | {t:.1f} | {r['roofline']:.2f} | "
                  f"{diff:.1e} |", flush=True)
    write_experiment(args.json, rows, bw)


if __name__ == "__main__":
    main()
