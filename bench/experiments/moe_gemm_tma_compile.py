"""Compile the MoE GEMM experiment's kernels for sm_90 without a GPU and
report what the machine code does: registers, spills, shared memory, the
wgmma shape, TMA loads (UTMALDG) vs cp.async (LDGSTS) per kernel.

    python bench/experiments/moe_gemm_tma_compile.py [--variants all] [--prod] [--json PATH]

Signatures mirror the JIT's specialization on the bench shapes (bf16, 16-byte
aligned pointers, N/K/row strides divisible by 16, host descriptors with the
variant's boxes). A config that spills or exceeds sm_90's 227 KB of shared
memory is reported as not viable (exit status 1).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: bench.experiments, tritonsrc and python/ import from the repo root
    sys.path.insert(0, str(REPO))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from bench.experiments.moe_gemm_tma import VARIANTS, cfg_name  # noqa: E402
from bench.experiments.moe_gemm_tma_kernels import moe_gemm_tma_kernel, moe_gemm_tma_persistent_kernel  # noqa: E402
from tritonsrc.moe.grouped_gemm import fused_moe_kernel  # noqa: E402

SMEM_LIMIT = 227 * 1024
_DIV16 = {"N", "K", "stride_am", "stride_cm", "stride_be", "stride_bn"}
_BIN = Path(triton.__file__).parent / "backends/nvidia/bin"
# The production configs the tuning database picks for the bench shapes (bf16).
PROD_CONFIGS = [(64, 128, 64, 8, 4, 3), (128, 256, 64, 16, 8, 3), (128, 256, 64, 16, 8, 4)]


def source(kind, opts, cfg, mul):
    bm, bn, bk, group, _, _ = cfg
    if kind == "prod":
        fn = fused_moe_kernel
        const = dict(MUL_ROUTED_WEIGHT=mul, QUANT=0, ALIGNED=True, BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn,
                     BLOCK_SIZE_K=bk, GROUP_SIZE_M=group)
    else:
        fn = moe_gemm_tma_persistent_kernel if kind == "persistent" else moe_gemm_tma_kernel
        const = dict(MUL_ROUTED_WEIGHT=mul, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group, **opts)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const:
            sig[name] = "constexpr"
        elif name == "a_desc":
            if const["A_SORTED"]:
                sig[name] = f"tensordesc<bf16[{bm}, {bk}]>"
            else:
                sig[name], const[name] = "constexpr", None
        elif name == "b_desc":
            if const["B_TMA"]:
                sig[name] = f"tensordesc<bf16[1, {bn}, {bk}]>"
            else:
                sig[name], const[name] = "constexpr", None
        elif name in ("a_ptr", "b_ptr", "c_ptr"):
            sig[name] = "*bf16"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("a_scale_ptr", "b_scale_ptr", "topk_weights_ptr"):
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = "*i32"
        else:
            sig[name] = "i32"
            if name in _DIV16:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs)


def sass_summary(compiled):
    """Registers, spills, shared memory and the instructions that matter."""
    with tempfile.TemporaryDirectory() as d:
        cubin = os.path.join(d, "k.cubin")
        Path(cubin).write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([str(_BIN / "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
        res = subprocess.run([str(_BIN / "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True).stdout
    field = lambda name: int(re.search(name + r":(\d+)", res).group(1))  # noqa: E731
    return dict(shared=compiled.metadata.shared, regs=field("REG"), stack=field("STACK"), local=field("LOCAL"),
                wgmma=sorted(set(re.findall(r"HGMMA\.(\w+)\.", sass))), hgmma=sass.count("HGMMA."),
                tma_loads=sass.count("UTMALDG"), cp_async=sass.count("LDGSTS"))


def inspect(kind, opts, cfg, mul):
    t = time.time()
    k = triton.compile(source(kind, opts, cfg, mul), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=cfg[4], num_stages=cfg[5]))
    return dict(sass_summary(k), compile_s=round(time.time() - t, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="all")
    ap.add_argument("--configs", type=int, default=0, help="only the first N configs of each variant (0: all)")
    ap.add_argument("--gemm2", action="store_true", help="also the MUL_ROUTED_WEIGHT (GEMM2) form")
    ap.add_argument("--prod", action="store_true", help="also the production kernel's tuned configs")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    todo = []
    for v in names:
        kind, opts, cfgs = VARIANTS[v]
        todo += [(v, kind, opts, c) for c in (cfgs[:args.configs] if args.configs else cfgs)]
    if args.prod:
        todo += [("prod", "prod", {}, c) for c in PROD_CONFIGS]
    rows, bad = [], 0
    for v, kind, opts, cfg in todo:
        for mul in ([False, True] if args.gemm2 else [False]):
            r = dict(variant=v, config=cfg_name(cfg), mul_routed_weight=mul, **inspect(kind, opts, cfg, mul))
            r["viable"] = r["shared"] <= SMEM_LIMIT and r["stack"] == 0 and r["local"] == 0 and r["hgmma"] > 0
            bad += not r["viable"]
            rows.append(r)
            print(" ".join(f"{k}={val}" for k, val in r.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} kernels compiled for sm_90, {bad} not viable")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
