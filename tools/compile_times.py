#!/usr/bin/env python3
"""Where a build's kernel compile time goes: CPU seconds per kernel (and per
functional flag value) from the compile step's metadata (compile_cpu_seconds:
Triton + ptxas CPU time, independent of machine load).

    python tools/compile_times.py build/kernels [--by FLAG]
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir", type=Path, help="BUILD_DIR/kernels")
    ap.add_argument("--by", default="", help="also split each kernel by this functional flag (e.g. ENABLE_DROPOUT)")
    args = ap.parse_args()
    per = defaultdict(lambda: [0, 0.0])
    total = [0, 0.0]
    for meta in sorted(args.kernel_dir.glob("cubins/sm_*/*/*/*.json")):
        m = json.loads(meta.read_text())
        if "compile_cpu_seconds" not in m:
            continue
        arch, kernel, functional = meta.parts[-4], meta.parts[-3], meta.parts[-2]
        key = (arch, kernel)
        if args.by:
            flags = dict(kv.split("-", 1) for kv in functional.split("__") if "-" in kv)
            key += (f"{args.by}={flags.get(args.by, '-')}",)
        for acc in (per[key], total):
            acc[0] += 1
            acc[1] += m["compile_cpu_seconds"]
    print(f"{'arch':6} {'kernel':28} {'split':22} {'cubins':>6} {'cpu s':>8} {'s/cubin':>7} {'share':>6}")
    for key, (n, s) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        split = key[2] if len(key) > 2 else ""
        print(f"{key[0]:6} {key[1]:28} {split:22} {n:6d} {s:8.1f} {s / n:7.2f} {100 * s / total[1]:5.1f}%")
    print(f"total: {total[0]} cubins, {total[1]:.0f} CPU s ({total[1] / max(total[0], 1):.2f} s/cubin)")


if __name__ == "__main__":
    main()
