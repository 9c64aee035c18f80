"""Compile the Gluon flash forward ahead of time for sm_90, without a GPU, and
report registers / spills / shared memory per variant.

    python bench/experiments/flash_fwd_gluon_compile.py [--all] [--dtypes bf16,fp16] [--dump DIR] [--json PATH]

A gluon.jit kernel goes through triton.compile like a triton.jit one, but its
source object must be a GluonASTSource (same constructor as ASTSource): that
one builds the module with the target's layout attributes and enters the
pipeline at TTGIR, skipping the TTIR -> TTGIR layout passes.
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# (HEAD_DIM, CAUSAL_TYPE, BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps)
# Schedules 3 and 4 are the warp-specialized kernel (4 warps per partition).
# DEFAULT_VARIANTS (the CPU test's): the tightest on registers (255) and shared
# memory, and the warp-specialized one.
DEFAULT_VARIANTS = [
    (128, 2, 128, 128, 3, 2, 8),
    (128, 2, 128, 128, 3, 3, 4),
]
ALL_VARIANTS = [
    (d, c, 128, bn, st, sched, 4 if sched >= 3 else 8)
    for d in (64, 128)
    for c in (0, 1, 2)
    for (bn, st) in ((128, 3), (64, 4), (64, 2))
    for sched in (0, 1, 2, 3, 4)
]

SCHEDULE_NAMES = {0: "serial", 1: "fa3", 2: "nextqk", 3: "pingpong", 4: "wsnoturn", 5: "ppnextqk"}

_ARGS = ["Q", "K", "V", "O", "LSE", "sm_scale",
         "stride_qz", "stride_qh", "stride_qm", "stride_kz", "stride_kh", "stride_kn",
         "stride_vz", "stride_vh", "stride_vn", "stride_oz", "stride_oh", "stride_om",
         "stride_lse_z", "stride_lse_h", "num_heads_q", "num_heads_k", "seqlen_q", "seqlen_k"]


def gluon_source(head_dim, causal_type, block_m, block_n, num_stages, schedule, dtype="bf16"):
    """GluonASTSource for one variant: pointers 16-byte aligned, integer
    arguments unspecialised i32 (as the AOT build passes them)."""
    from triton.experimental.gluon._runtime import GluonASTSource
    sys.path.insert(0, str(REPO))
    if schedule >= 3:  # warp-specialized (flash_fwd_gluon_ws_kernel.py)
        from bench.experiments.flash_fwd_gluon_ws_kernel import attn_fwd_gluon_ws as attn_fwd_gluon
    else:
        from bench.experiments.flash_fwd_gluon_kernel import attn_fwd_gluon

    signature = {}
    for name in _ARGS:
        if name in ("Q", "K", "V", "O"):
            signature[name] = f"*{dtype}"
        elif name == "LSE":
            signature[name] = "*fp32"
        elif name == "sm_scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    constexprs = {"HEAD_DIM": head_dim, "CAUSAL_TYPE": causal_type, "BLOCK_M": block_m,
                  "BLOCK_N": block_n, "NUM_STAGES": num_stages, "SCHEDULE": schedule}
    for name in constexprs:
        signature[name] = "constexpr"
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(5)}
    return GluonASTSource(fn=attn_fwd_gluon, signature=signature, constexprs=constexprs, attrs=attrs)


def compile_variant(variant, arch=90, dtype="bf16"):
    import triton
    from triton.backends.compiler import GPUTarget
    head_dim, causal_type, block_m, block_n, num_stages, schedule, num_warps = variant
    src = gluon_source(head_dim, causal_type, block_m, block_n, num_stages, schedule, dtype)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def cubin_resources(cubin):
    sys.path.insert(0, str(REPO / "python"))
    from cubin_resources import resources
    return resources(cubin)


def _cuobjdump(args, cubin):
    sys.path.insert(0, str(REPO / "python"))
    from cubin_resources import cuobjdump
    return cuobjdump(args, cubin)


def overlapped_exponentials(cubin):
    """MUFU.EX2 (softmax exponentials) that the SASS issues while a wgmma group
    is outstanding (after an HGMMA that commits a group, before the wait that
    retires it), in layout order. ptxas moves waits; this is what the GPU runs."""
    count, outstanding = 0, 0
    for line in _cuobjdump(["-sass"], cubin).splitlines():
        if "HGMMA" in line and "gsb0" in line:
            outstanding += 1
        elif "WARPGROUP.DEPBAR.LE" in line:
            outstanding = min(outstanding, int(line.split("gsb0,")[1].split(";")[0], 16))
        elif "MUFU.EX2" in line and outstanding:
            count += 1
    return count


def summary(compiled):
    md = compiled.metadata
    res = cubin_resources(compiled.asm["cubin"])
    res["ex2_overlapped"] = overlapped_exponentials(compiled.asm["cubin"])
    # Spills go to the stack frame (STL/LDL): any stack or local bytes count.
    return {**res, "n_spills": res["stack"] + res["local"], "shared": int(md.shared), "num_warps": int(md.num_warps),
            "global_scratch_size": int(md.global_scratch_size)}


def variant_name(variant):
    d, c, bm, bn, st, sched, w = variant
    return f"d{d}_causal{c}_m{bm}_n{bn}_s{st}_{SCHEDULE_NAMES[sched]}_w{w}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every variant (slow on a small CPU)")
    ap.add_argument("--dtypes", default="bf16", help="comma-separated: bf16,fp16")
    ap.add_argument("--dump", default=None, help="write ttgir/llir/ptx/cubin per variant here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for dtype in args.dtypes.split(","):
        for variant in ALL_VARIANTS if args.all else DEFAULT_VARIANTS:
            name = f"{dtype}_{variant_name(variant)}"
            t0 = time.time()
            try:
                compiled = compile_variant(variant, dtype=dtype)
            except Exception as e:  # noqa: BLE001 - report every variant
                print(f"{name}: FAILED {type(e).__name__}: {str(e)[:2000]}", flush=True)
                rows.append({"variant": name, "error": f"{type(e).__name__}: {e}"[:4000]})
                continue
            row = {"variant": name, **summary(compiled), "compile_s": round(time.time() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.dump:
                out = Path(args.dump)
                out.mkdir(parents=True, exist_ok=True)
                for ext in ("ttgir", "llir", "ptx"):
                    (out / f"{name}.{ext}").write_text(compiled.asm[ext])
                (out / f"{name}.cubin").write_bytes(compiled.asm["cubin"])
    if args.json:
        import triton
        from triton.backends.nvidia.compiler import get_ptxas_version
        meta = {"target": "cuda sm_90 (GPUTarget('cuda', 90, 32)), compiled without a GPU",
                "triton": triton.__version__, "ptxas": [l for l in get_ptxas_version(90).splitlines() if "release" in l][0],
                "command": "python " + " ".join(sys.argv), "rows": rows}
        Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
