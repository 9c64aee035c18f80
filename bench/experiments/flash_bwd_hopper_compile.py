"""Compile the Gluon Hopper backward (tritonsrc/flash/bwd_hopper.py) for sm_90
without a GPU, for every variant the experiment runs, and report registers,
spills, shared memory and the wgmma / TMA instruction counts.

    python bench/experiments/flash_bwd_hopper_compile.py [--variants fused,split] [--json PATH]

The signature is the JIT's specialization on the bench shapes (16-byte
aligned pointers, strides divisible by 16, the launcher's descriptor types).
A kernel that spills, needs more than sm_90's 227 KB of shared memory or has
its wgmma serialized by ptxas is not viable (exit status 1).
"""
import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from bench.experiments.flash_bwd_hopper import VARIANTS  # noqa: E402
from python.cubin_resources import cuobjdump, resources  # noqa: E402
from tritonsrc.flash.bwd_hopper import bwd_dkdv_hopper  # noqa: E402
from python.jit.flash_bwd_hopper import DESC_ROWS, tma_arg  # noqa: E402

SMEM_LIMIT = 227 * 1024
CONSTEXPRS = ("BLOCK_DMODEL", "CAUSAL_TYPE", "FUSE_DQ", "BLOCK_M", "BLOCK_N", "NUM_STAGES", "SCHEDULE")
POINTERS = {"DK": "*{dtype}", "DV": "*{dtype}", "DQA": "*fp32", "LSE": "*fp32", "Delta": "*fp32"}
# Divisible by 16 on the bench shapes (the JIT specializes them so); lengths, head
# counts and LSE/Delta strides are do_not_specialize in the kernel.
DIV16 = {"stride_dkz", "stride_dkn", "stride_dvz", "stride_dvn", "stride_dqa_z", "stride_dqa_h", "stride_dqa_m",
         "stride_dkh", "stride_dvh"}


def source(dtype, head_dim, causal, config):
    functional = {"dtype": dtype, "BLOCK_DMODEL": head_dim, "CAUSAL_TYPE": causal}
    const = {**functional, **config}
    sig, attrs = {}, {}
    for i, name in enumerate(bwd_dkdv_hopper.arg_names):
        if name in CONSTEXPRS:
            sig[name] = "constexpr"
        elif name in DESC_ROWS:
            sig[name] = tma_arg(name, DESC_ROWS[name]).triton_type(functional, config)
        elif name in POINTERS:
            sig[name] = POINTERS[name].format(dtype=dtype)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "sm_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name in DIV16:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return GluonASTSource(fn=bwd_dkdv_hopper, signature=sig, attrs=attrs,
                          constexprs={k: const[k] for k in CONSTEXPRS})


def inspect(dtype, head_dim, causal, config):
    t = time.time()
    kernel_cfg = {k: config[k] for k in CONSTEXPRS if k in config}
    compiled = triton.compile(source(dtype, head_dim, causal, kernel_cfg), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=config["num_warps"]))
    cubin = compiled.asm["cubin"]
    sass = cuobjdump(["-sass"], cubin)
    res = resources(cubin)
    hgmma = sass.count("HGMMA.")
    return dict(shared=compiled.metadata.shared, regs=res["n_regs"], spill_bytes=res["stack"] + res["local"],
                hgmma=hgmma, wgmma_shapes=sorted(set(re.findall(r"HGMMA\.(\w+)\.", sass))),
                # ptxas serializes wgmma (a wait after every HGMMA) when it cannot prove the overlap safe.
                wgmma_serialized=sass.count("WARPGROUP.DEPBAR") >= hgmma,
                tma_loads=sass.count("UTMALDG"), atomics=len(re.findall(r"\bREDG?\.|\bATOMG?\.", sass)),
                compile_s=round(time.time() - t, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="all")
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    rows, bad = [], 0
    for v, dtype, d, causal in itertools.product(names, args.dtypes.split(","), map(int, args.head_dims.split(",")),
                                                 map(int, args.causal.split(","))):
        if d not in VARIANTS[v]:
            continue
        config = VARIANTS[v][d]
        r = dict(variant=v, dtype=dtype, D=d, causal=causal, **config)
        try:
            r.update(inspect(dtype, d, causal, config))
            r["viable"] = (r["shared"] <= SMEM_LIMIT and r["spill_bytes"] == 0 and r["hgmma"] > 0
                           and not r["wgmma_serialized"])
        except Exception as e:  # report every variant, then fail
            r.update(viable=False, error=f"{type(e).__name__}: {str(e)[-2000:]}")
        bad += not r["viable"]
        rows.append(r)
        print(" ".join(f"{k}={val}" for k, val in r.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} kernels compiled for sm_90, {bad} not viable")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
