"""MoE coverage benchmarks (issue 13, item 6) on the GPU, in one run:

    python bench/bench_moe_coverage.py [--prefix install] [--sections quant] [--quick]
                                       [--json bench/results/moe_coverage_sm90.json]

Each section writes its rows under its own key of the JSON file ("quant":
bench/moe_coverage_quant.py); keys of sections not run are kept, so sections
can run separately. The file also records GPU, versions, commit and the
device copy bandwidth of the last run; with $OUT set, a copy goes there too.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from bench_common import commit_id, copy_bandwidth

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--sections", default="quant")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=str(REPO / "bench/results/moe_coverage_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton

    warm, rep = (10, 40) if args.quick else (25, 100)

    def t_ms(fn):
        fn()
        return triton.testing.do_bench(fn, warmup=warm, rep=rep, return_mode="median")

    def t_graph_ms(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median")

    bw = copy_bandwidth()
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "aotriton": aotriton.version(), "profile": aotriton.build_profile(), "commit": commit_id(),
            "copy_bandwidth_GBps": round(bw / 1e9, 1), "quick": args.quick}
    print(f"GPU {meta['gpu']}, torch {meta['torch']}, triton {meta['triton']}, aotriton {meta['aotriton']} "
          f"(profile {meta['profile']}, commit {meta['commit']}); device copy bandwidth {bw / 1e9:.0f} GB/s")
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update(meta)
    sections = args.sections.split(",")
    if "quant" in sections:
        from moe_coverage_quant import quant_rows
        result["quant"] = quant_rows(torch, aotriton, t_ms, t_graph_ms, bw, quick=args.quick)
    text = json.dumps(result, indent=1, sort_keys=True).replace("NaN", "null") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / path.name).write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
