"""MoE coverage benchmarks on the GPU (issue 13). This script owns the "routing"
key of bench/results/moe_coverage_sm90.json (other keys of that file, e.g. the
quantization rows, are kept as they are).

    python bench/bench_moe_routing.py [--prefix install] [--tokens 1,64,4096] [--dtype fp32]
                                       [--json bench/results/moe_coverage_sm90.json]

Routing rows: DeepSeek-V3-like router (E = 256 experts in 8 groups, keep 4
groups, top-8, sigmoid scores, e_score_correction_bias, renormalize,
routed_scaling_factor 2.5) on gating logits [M, 256]:
  aot ms / aot graph ms      aotriton.grouped_topk (one launch), eager (do_bench median)
                             and one CUDA-graph replay per call
  torch ms / torch graph ms  the same routing in plain torch ops (vLLM's grouped_topk
                             formulation: sigmoid, view/topk/scatter masks, topk, gather)
  speedup                    torch graph ms / aot graph ms
Each row also records the fraction of tokens for which both chose the same ids in
the same order (a correctness guard; fp32 rounding may flip a near tie).
"""
import argparse
import json
import os
import sys
from pathlib import Path

from bench_common import commit_id

REPO = Path(__file__).resolve().parent.parent
V3 = dict(E=256, topk=8, groups=8, topk_group=4, scale=2.5)


def torch_grouped_topk(logits, bias, topk, groups, topk_group, scale):
    """vLLM's grouped_topk (sigmoid + correction bias) in torch ops: the reference timed here."""
    import torch

    scores = logits.float().sigmoid()
    M, E = scores.shape
    sel = scores + bias[None, :]
    gscore = sel.view(M, groups, -1).topk(2, dim=-1)[0].sum(-1)
    gidx = gscore.topk(topk_group, dim=-1, sorted=False)[1]
    gmask = torch.zeros_like(gscore).scatter_(1, gidx, 1)
    emask = gmask.unsqueeze(-1).expand(M, groups, E // groups).reshape(M, E)
    ids = sel.masked_fill(~emask.bool(), float("-inf")).topk(topk, dim=-1)[1]
    w = scores.gather(1, ids)
    w = w / w.sum(-1, keepdim=True) * scale
    return w, ids.to(torch.int32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--tokens", default="1,64,4096")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--json", default=str(REPO / "bench/results/moe_coverage_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton

    dev = "cuda"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    def t_ms(fn):
        fn()
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

    def t_graph_ms(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")

    gpu = torch.cuda.get_device_name()
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "aotriton": aotriton.version(),
            "profile": aotriton.build_profile(), "commit": commit_id(), "logits_dtype": args.dtype,
            "layer": "DeepSeek-V3-like router: E=256, 8 groups, topk_group=4, top-8, sigmoid, bias, "
                     "renormalize, routed_scaling_factor=2.5"}
    print(f"GPU {gpu}, torch {meta['torch']}, triton {meta['triton']}, aotriton {meta['aotriton']} "
          f"(profile {meta['profile']}, commit {meta['commit']})")
    cols = ["M", "aot ms", "aot graph ms", "torch ms", "torch graph ms", "speedup (graph)", "rows with same ids"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)
    rows = []
    torch.manual_seed(0)
    for M in [int(t) for t in args.tokens.split(",")]:
        logits = torch.randn(M, V3["E"], device=dev).to(dtype)
        bias = torch.rand(V3["E"], device=dev) * 0.1
        w = torch.empty(M, V3["topk"], device=dev)
        ids = torch.empty(M, V3["topk"], dtype=torch.int32, device=dev)

        def aot():
            aotriton.grouped_topk(None, logits, V3["topk"], True, V3["groups"], V3["topk_group"], "sigmoid",
                                  V3["scale"], bias, topk_weights=w, topk_ids=ids)

        def ref():
            return torch_grouped_topk(logits, bias, V3["topk"], V3["groups"], V3["topk_group"], V3["scale"])

        aot()
        rw, rids = ref()
        row_same = (ids == rids).all(-1)
        same = float(row_same.float().mean())
        r = dict(M=M, aot_ms=t_ms(aot), aot_graph_ms=t_graph_ms(aot), torch_ms=t_ms(ref),
                 torch_graph_ms=t_graph_ms(ref), rows_same_ids=same,
                 max_weight_diff_same_rows=float((w - rw)[row_same].abs().max()) if row_same.any() else None)
        r["speedup_graph"] = r["torch_graph_ms"] / r["aot_graph_ms"]
        rows.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})
        print(f"| {M} | {r['aot_ms']:.4f} | {r['aot_graph_ms']:.4f} | {r['torch_ms']:.4f} | "
              f"{r['torch_graph_ms']:.4f} | {r['speedup_graph']:.1f}x | {same:.4f} |", flush=True)
    path = Path(args.json)
    data = json.loads(path.read_text()) if path.exists() else {}
    data["routing"] = {**meta, "rows": rows}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "moe_coverage_sm90.json").write_text(text)
    print(f"wrote {args.json} (key 'routing')")


if __name__ == "__main__":
    main()
