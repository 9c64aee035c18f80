#!/usr/bin/env python3
"""Where kernel compile time goes.

    python tools/compile_times.py report build/kernels [--by FLAG]
        CPU seconds per kernel (and per functional flag value) of a finished
        build, from the compile step's metadata (compile_cpu_seconds: Triton +
        ptxas CPU time, independent of machine load).
    python tools/compile_times.py sample --profile release --arch 90 [--per-stratum 1]
        Without building the profile: compiles a few cubins of each stratum
        (kernel x dtype x head-dim bucket) of the profile's plan with a fresh
        Triton cache and extrapolates the profile's CPU seconds from their
        mean, so a 2-core machine can estimate a release build in minutes.

    python tools/compile_times.py estimate SAMPLE.json [MORE.json] --profile release --arch 90
        The samples' pooled per-stratum means times the current rules' cubin
        counts (what a rules change does to compile time, without compiling).

("python tools/compile_times.py build/kernels" still means `report`.)
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: python/ and tritonsrc/ are packages at the repo root
# A compile edge is a fresh Python process: starting it and importing triton
# and the rules costs this much CPU outside compile_cpu_seconds (measured: a
# Triton cache hit takes 0.65-0.78 CPU s in all, 0.49 of it counted inside).
PROCESS_START_CPU_S = 0.2


def report(args):
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


def plan_cubins(profile, arch):
    """(stratum, kernel, functional, config) for every cubin the profile compiles."""
    from python import build_plan, rules
    plan = build_plan.make_plan(rules, profile, [arch])
    out = []
    for k in plan["kernels"]:
        for e in k["entries"]:
            f = e["functional"]
            stratum = (k["name"], str(f.get("dtype", "-")), str(f.get("BLOCK_DMODEL", "-")))
            for v in e["variants"]:
                for c in v["configs"]:
                    out.append((stratum, k["name"], f, c))
    return out


def write_sample_json(args, n_cubins, cpu_seconds, rows):
    Path(args.json).write_text(json.dumps({
        "profile": args.profile, "arch": args.arch, "cubins": n_cubins, "cpu_seconds": round(cpu_seconds),
        "strata": [{"stratum": "/".join(s), "cubins": n, "sampled": k, "mean_s": round(m, 3)}
                   for s, n, k, m, _ in rows]}, indent=1) + "\n")


def sample(args):
    cubins = plan_cubins(args.profile, args.arch)
    strata = defaultdict(list)
    for item in cubins:
        strata[item[0]].append(item)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="aotriton-ct-"))
    env = dict(os.environ, TRITON_CACHE_DIR=str(work / "triton-cache"))  # no cache hits
    rows, total_est = [], 0.0
    for stratum in sorted(strata):
        members = strata[stratum]
        picks = rng.sample(members, min(args.per_stratum, len(members)))
        secs = []
        for i, (_, kernel, f, c) in enumerate(picks):
            out = work / "/".join(stratum) / f"{i}.cubin"
            cmd = [sys.executable, str(REPO / "python/compile_kernel.py"), "--kernel", kernel,
                   "--functional", json.dumps(f), "--config", json.dumps(c["values"]),
                   "--arch", str(args.arch), "--out", str(out)]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr)
            secs.append(json.loads(out.with_suffix(".json").read_text())["compile_cpu_seconds"] + PROCESS_START_CPU_S)
        mean = sum(secs) / len(secs)
        est = mean * len(members)
        total_est += est
        rows.append((stratum, len(members), len(secs), mean, est))
        print(f"{'/'.join(stratum):40} {len(members):5d} cubins  sampled {len(secs)}  {mean:6.2f} s/cubin  "
              f"~{est:7.0f} CPU s", flush=True)
        if args.json:  # after every stratum: an interrupted run keeps what it measured
            write_sample_json(args, len(cubins), total_est, rows)
    print(f"profile {args.profile} sm_{args.arch}: {len(cubins)} cubins, ~{total_est:.0f} CPU s estimated "
          f"(~{total_est / 2 / 60:.1f} min on 2 cores, ~{total_est / 16 / 60:.1f} min on 16, compiles only)")


def estimate(args):
    """Re-weights a sample's per-stratum means by another plan's cubin counts
    (what a rules change does to compile time, without compiling again)."""
    samples = defaultdict(list)  # stratum -> (cubins sampled, mean) of each sample file
    for path in args.sample_json:
        for row in json.loads(Path(path).read_text())["strata"]:
            samples[row["stratum"]].append((row["sampled"], row["mean_s"]))
    means = {st: sum(n * m for n, m in rows) / sum(n for n, _ in rows) for st, rows in samples.items()}
    overall = sum(means.values()) / len(means)
    counts = defaultdict(int)
    for stratum, *_ in plan_cubins(args.profile, args.arch):
        counts["/".join(stratum)] += 1
    total, per_kernel, guessed = 0.0, defaultdict(lambda: [0, 0.0]), []
    for stratum, n in counts.items():
        mean = means.get(stratum)
        if mean is None:
            guessed.append(stratum)
            mean = overall
        total += n * mean
        per_kernel[stratum.split("/")[0]][0] += n
        per_kernel[stratum.split("/")[0]][1] += n * mean
    for kernel, (n, s) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        print(f"{kernel:28} {n:6d} cubins  ~{s:7.0f} CPU s")
    n = sum(counts.values())
    print(f"profile {args.profile} sm_{args.arch}: {n} cubins, ~{total:.0f} CPU s estimated from "
          f"{len(args.sample_json)} sample(s) (~{total / 2 / 60:.1f} min on 2 cores, ~{total / 16 / 60:.1f} min on 16, compiles only)"
          + (f"; strata not sampled (overall mean used): {', '.join(sorted(guessed))}" if guessed else ""))


def main():
    argv = sys.argv[1:]
    if argv and argv[0] not in ("report", "sample", "estimate", "-h", "--help"):
        argv = ["report"] + argv  # the old form: compile_times.py BUILD/kernels
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("kernel_dir", type=Path, help="BUILD_DIR/kernels")
    r.add_argument("--by", default="", help="also split each kernel by this functional flag (e.g. ENABLE_DROPOUT)")
    s = sub.add_parser("sample")
    s.add_argument("--profile", default="release")
    s.add_argument("--arch", type=int, default=90)
    s.add_argument("--per-stratum", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", default="", help="also write the estimate here")
    e = sub.add_parser("estimate")
    e.add_argument("sample_json", nargs="+", help="`sample --json` outputs (their means are pooled)")
    e.add_argument("--profile", default="release")
    e.add_argument("--arch", type=int, default=90)
    args = ap.parse_args(argv)
    {"report": report, "sample": sample, "estimate": estimate}[args.cmd](args)


if __name__ == "__main__":
    main()
