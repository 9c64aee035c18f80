"""Fingerprints of compiled kernels: proof that a refactor of tritonsrc/
changes no kernel.

    python tools/kernel_fingerprints.py compile --profile ci --archs 80,90 \
        [--kernels attn_fwd,bwd_dq] [--jobs 2] --out before.json
    (change the sources)
    python tools/kernel_fingerprints.py compile ... --out after.json
    python tools/kernel_fingerprints.py compare before.json after.json

`compile` builds every cubin the profile's plan holds for those kernels
(python/build_plan.py, the same compile path as the build:
python/compile_kernel.py) and records the sha256 of each cubin and its PTX.
Line info is off (TRITON_DISABLE_LINE_INFO=1): moving a helper to another
file changes the line table and nothing else, and the line table is what a
pure code move must be allowed to change. `compare` prints every entry that
differs or is missing on one side and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: python/ and tritonsrc/ are packages at the repo root


def _jobs(profile: str, archs: list[int], kernels: set[str] | None) -> list[tuple]:
    from python import rules
    from python.build_plan import make_plan

    plan = make_plan(rules, profile, archs)
    jobs = []
    for k in plan["kernels"]:
        if kernels is not None and k["name"] not in kernels:
            continue
        for e in k["entries"]:
            for v in e["variants"]:
                for c in v["configs"]:
                    jobs.append((k["name"], e["functional"], e["name"], c["values"], c["name"], v["arch"]))
    return jobs


def _worker_init(cache_dir: str) -> None:
    os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
    # A cache only ever filled without line info: a hit is always comparable.
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.chdir(REPO)
    from python import compile_kernel
    compile_kernel.use_repo_relative_sources()


def _compile(job: tuple) -> tuple[str, dict]:
    from python import compile_kernel, rules

    kernel, functional, fname, config, cname, arch = job
    key = f"{kernel} sm_{arch} {fname} {cname}"
    rule = next(r for r in rules.KERNELS if r.name == kernel)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            compiled = compile_kernel.compile_one(rule, functional, config, arch, compile_dir=tmp)
        os.chdir(REPO)
    except Exception as e:  # a kernel that no longer compiles is a difference too
        os.chdir(REPO)
        return key, {"error": f"{type(e).__name__}: {e}"}
    return key, {
        "cubin": hashlib.sha256(compiled.asm["cubin"]).hexdigest(),
        "ptx": hashlib.sha256(compiled.asm["ptx"].encode()).hexdigest(),
    }


def cmd_compile(args) -> int:
    archs = [int(a) for a in args.archs.replace(";", ",").split(",") if a]
    kernels = set(args.kernels.split(",")) if args.kernels else None
    jobs = _jobs(args.profile, archs, kernels)
    if args.match:
        jobs = [j for j in jobs if re.search(args.match, f"{j[0]} sm_{j[5]} {j[2]} {j[4]}")]
    if kernels is not None:
        unknown = kernels - {j[0] for j in jobs}
        if unknown:
            sys.exit(f"no cubins of {sorted(unknown)} in profile {args.profile}")
    cache = args.cache_dir or str(Path(tempfile.gettempdir()) / "aotriton-fingerprint-cache")
    print(f"{len(jobs)} cubins", file=sys.stderr)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.jobs, initializer=_worker_init, initargs=(cache,)) as pool:
        results = dict(pool.imap_unordered(_compile, jobs))
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    errors = [k for k, v in results.items() if "error" in v]
    for k in errors:
        print(f"FAILED {k}: {results[k]['error']}", file=sys.stderr)
    return 1 if errors else 0


def cmd_compare(args) -> int:
    a = json.loads(Path(args.before).read_text())
    b = json.loads(Path(args.after).read_text())
    bad = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"only in {'after' if key in b else 'before'}: {key}")
            bad += 1
        elif a[key] != b[key]:
            parts = [p for p in ("cubin", "ptx", "error") if a[key].get(p) != b[key].get(p)]
            print(f"differs ({', '.join(parts)}): {key}")
            bad += 1
    print(f"{len(set(a) & set(b)) - sum(1 for k in set(a) & set(b) if a[k] != b[k])} identical, {bad} different")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--profile", default="ci")
    c.add_argument("--archs", default="80,90")
    c.add_argument("--kernels", default="", help="comma-separated rule names (default: all)")
    c.add_argument("--match", default="", help="only the cubins whose 'kernel sm_ARCH functional config' matches")
    c.add_argument("--jobs", type=int, default=1)
    c.add_argument("--cache-dir", default="", help="Triton cache for these line-info-free compiles")
    c.add_argument("--out", required=True)
    d = sub.add_parser("compare")
    d.add_argument("before")
    d.add_argument("after")
    args = ap.parse_args(argv)
    return cmd_compile(args) if args.cmd == "compile" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
