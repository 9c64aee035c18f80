#!/usr/bin/env python3
"""Count the SASS of a kernel's loops, without a GPU.

Compiles one functional + config of a rule (the build's own compile,
compile_kernel.compile_one), disassembles the cubin with Triton's nvdisasm,
and prints every backward branch's body: its instruction count and an opcode
histogram. The decode kernels are issue-bound (docs/notes-moe-perf.md), so
instructions per loop trip is the first thing to compare between two forms.

  python3 tools/sass_loops.py fused_moe_gemm_wq \
      --functional '{"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": false, "BLOCK_SIZE_M": 16, "SPLIT_K": 1}' \
      --config '{"BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "INT4_DOT": 4, "num_warps": 4, "num_stages": 3}'
Omitted config keys take the rule's default for the functional.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "python"), str(REPO)]
from tools.sass_load_use import report, without_guard  # noqa: E402

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
_BRANCH_TARGET = re.compile(r"\bBRA\b.*?(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))")
_LABEL = re.compile(r"^\.L_x_(\d+):")


def disassemble(cubin: bytes) -> list[tuple[int, str]]:
    """(address, instruction text) of every instruction, with labels resolved to addresses."""
    import triton
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([str(nvdisasm), "-c", "-hex", f.name], check=True, capture_output=True,
                              text=True).stdout
    finally:
        os.unlink(f.name)
    out, labels, pending = [], {}, []
    for raw in text.splitlines():
        line = raw.strip()
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _LINE.search(line)
        if m:
            addr = int(m.group(1), 16)
            for lab in pending:
                labels[lab] = addr
            pending = []
            out.append((addr, m.group(2).strip()))
    resolved = []
    for addr, ins in out:
        m = re.search(r"`\(\.L_x_(\d+)\)", ins)
        if m and m.group(1) in labels:
            ins = ins.replace(m.group(0), f"@{labels[m.group(1)]:#x}")
        resolved.append((addr, ins))
    return resolved


def opcode(ins: str) -> str:
    ins = without_guard(ins)
    return ins.split()[0] if ins else ""


def loops(instructions):
    """(start, end) address pairs of backward branches: loop bodies."""
    found = []
    for addr, ins in instructions:
        if opcode(ins) == "BRA":
            m = re.search(r"@(0x[0-9a-f]+)", ins)
            if m and int(m.group(1), 16) <= addr:
                found.append((int(m.group(1), 16), addr))
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel")
    ap.add_argument("--functional", required=True, help="JSON dict")
    ap.add_argument("--config", default="{}", help="JSON dict; missing keys from the rule's default")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--min-size", type=int, default=40, help="skip loops shorter than this")
    ap.add_argument("--dump", action="store_true", help="print the loop bodies too")
    ap.add_argument("--load-use", action="store_true",
                    help="for each global load in a loop, how many instructions until its first reader")
    args = ap.parse_args(argv)

    from python import compile_kernel, rules
    rule = {k.name: k for k in rules.KERNELS}[args.kernel]
    functional = json.loads(args.functional)
    config = {**dict(rule.tuning.default(functional, args.arch)), **json.loads(args.config)}
    compiled = compile_kernel.compile_one(rule, functional, config, args.arch)
    meta = compiled.metadata
    print(f"{args.kernel} {json.dumps(config, sort_keys=True)}")
    from python.cubin_resources import resources
    print(f"resources {resources(compiled.asm['cubin'])}, shared {meta.shared} bytes")
    instructions = disassemble(compiled.asm["cubin"])
    for start, end in loops(instructions):
        body = [ins for addr, ins in instructions if start <= addr <= end]
        if len(body) < args.min_size:
            continue
        hist = collections.Counter(opcode(i).split(".")[0] for i in body)
        print(f"loop {start:#x}-{end:#x}: {len(body)} instructions")
        print("  " + ", ".join(f"{k} {v}" for k, v in hist.most_common()))
        if args.load_use:
            print("\n".join(report(body)))
        if args.dump:
            for ins in body:
                print("    " + ins)


if __name__ == "__main__":
    main()
