#!/usr/bin/env python3
"""Check that a change leaves existing kernels byte-identical ("zero cost when
off"): compile the same functionals from this checkout and from a git ref and
compare their PTX and cubins.

  python tools/compare_cubins.py --ref HEAD~1 --kernel attn_fwd --kernel bwd_dq [--profile ci]
         [--arch 90] [--every 4]

Both trees compile with Triton's line info off (line numbers move with any
edit of a kernel file; nothing else in the code does). A functional of this
checkout is compared when the ref has it with every functional the ref does
not know set to its first (default, "off") value, e.g. a new BLOCK_DV = 0.
--every N compiles every N-th functional of the profile (default all). Exits 1
on any difference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run inside a tree: compile the listed functionals, print {name: hashes}.
CHILD = r"""
import hashlib, json, sys
sys.path[:0] = ["python", "."]  # python/ too: a ref before python/ became a package
from python import compile_kernel
compile_kernel.use_repo_relative_sources()
from python import rules
from python.kernel_rules import functional_name
jobs = json.loads(sys.argv[1])
by_name = {k.name: k for k in rules.KERNELS}
out = {}
for kernel, functional, arch in jobs:
    rule = by_name[kernel]
    c = compile_kernel.compile_one(rule, functional, dict(rule.tuning.default(functional, arch)), arch)
    out[f"{kernel} sm_{arch} {functional_name(functional)}"] = [
        hashlib.sha256(c.asm["ptx"].encode()).hexdigest(), hashlib.sha256(c.asm["cubin"]).hexdigest()]
print(json.dumps(out))
"""

# Run inside a tree: the functionals (dicts) and functional spaces of the kernels in a profile.
PLAN = r"""
import json, sys
sys.path[:0] = ["python", "."]  # python/ too: a ref before python/ became a package
from python import build_plan, rules
kernels, profile, arch = json.loads(sys.argv[1])
plan = build_plan.make_plan(rules, profile, [arch])
by_name = {k.name: k for k in rules.KERNELS}
print(json.dumps({k["name"]: {"built": [e["functional"] for e in k["entries"] if e["variants"]],
                              "space": by_name[k["name"]].functional_space}
                  for k in plan["kernels"] if k["name"] in kernels}))
"""


def run_in(tree: Path, script: str, arg) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DISABLE_LINE_INFO"] = "1"
    r = subprocess.run([sys.executable, "-c", script, json.dumps(arg)], cwd=tree, env=env, capture_output=True,
                       text=True)
    if r.returncode:
        sys.exit(f"failed in {tree}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def export_ref(ref: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True,
                             check=True).stdout
    tar_path = dest.with_suffix(".tar")
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="git revision to compare against (e.g. HEAD~1, main)")
    ap.add_argument("--kernel", action="append", required=True)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--every", type=int, default=1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "ref"
        export_ref(args.ref, old_tree)
        new_plan = run_in(REPO, PLAN, [args.kernel, args.profile, args.arch])
        old_plan = run_in(old_tree, PLAN, [args.kernel, args.profile, args.arch])
        new_jobs, old_jobs = [], []
        for kernel in args.kernel:
            if kernel not in new_plan or kernel not in old_plan:
                sys.exit(f"{kernel}: not in profile {args.profile} of both trees")
            old_space = old_plan[kernel]["space"]
            new_space = new_plan[kernel]["space"]
            added = {k: v[0] for k, v in new_space.items() if k not in old_space}
            old_built = old_plan[kernel]["built"]
            for f in new_plan[kernel]["built"][::args.every]:
                if any(f[k] != v for k, v in added.items()):
                    continue  # a new functional value: nothing to compare with
                old_f = {k: f[k] for k in old_space}
                if old_f in old_built:
                    new_jobs.append([kernel, f, args.arch])
                    old_jobs.append([kernel, old_f, args.arch])
        new = run_in(REPO, CHILD, new_jobs)
        old = run_in(old_tree, CHILD, old_jobs)
    same = 0
    for (new_name, new_h), (old_name, old_h) in zip(new.items(), old.items()):
        if new_h == old_h:
            same += 1
        else:
            what = " and ".join(w for w, a, b in zip(("PTX", "cubin"), new_h, old_h) if a != b)
            print(f"DIFFERENT {what}: {new_name} (ref: {old_name})")
    print(f"{same} of {len(new)} functionals identical (PTX and cubin, sm_{args.arch}, line info off) "
          f"between {args.ref} and this checkout")
    return 0 if same == len(new) and new else 1


if __name__ == "__main__":
    sys.exit(main())
