"""GPU tuner: fills tuning/sm_<arch>/<kernel>.json with the fastest correct
config per (functional, autotune-key bin). `python python/tune.py moe ...`
tunes the MoE grouped GEMM instead (python/tune_moe.py), `python python/tune.py
decode ...` the KV-cache decode kernel (python/tune_decode.py).

    python python/tune.py [--kernels attn_fwd,bwd_dkdv,bwd_dq,attn_fwd_hopper,attn_fwd_hopper_varlen,bwd_dkdv_hopper] [--dtypes fp16,bf16]
                          [--head-dims 64,128] [--causal 0,1,2] [--seqlens 512,...,16384] [--fuse-dq 0,1]

Configs are the rule's own tuning space (rule.tuning.all_configs), run through
the launchers in python/jit/ with the kernel the AOT build compiles
(AOTRITON_JIT_AOT_FORM=1, python/jit_launch.aot_form: the JIT's own
specialization took 127 registers where the build's took 130 and ranked a config
the build ran at 0.65-0.8x; AOTRITON_JIT_AOT_FORM=0 times the JIT's). Each config is
timed by CUDA-graph replay (tune_shared.kernel_ms: no launch overhead) on the benchmark
shape family (batch * seqlen = 16k tokens, hidden 2048), and its output is
checked against the reference (SDPA for the forward, the validated default
config for the backward) before it may win. Seqlens of the list that share a bin
(8192 and 16384: the last) make one entry, tuned over all of them (the best
geometric mean; `tuned_over` records each seqlen's time). Results are written after every
entry, so an interrupted run resumes where it stopped. generate.py compiles the
winners into the release build's LUTs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: python/ and tritonsrc/ import as packages from the repo root
    sys.path.insert(0, str(REPO))

from python import build_plan, rules  # noqa: E402
from python.kernel_rules import config_name, functional_name  # noqa: E402
from python.tune_shared import bin_of, kernel_ms  # noqa: E402

TOKENS, HIDDEN = 16384, 2048


def db_path(kernel, arch):
    return build_plan.TUNING_DB_DIR / f"sm_{arch}" / f"{kernel}.json"


def load_db(kernel, arch, rule):
    p = db_path(kernel, arch)
    if p.exists():
        return json.loads(p.read_text())
    return {"kernel": kernel, "arch": arch, "keys": [k.arg for k in rule.autotune_keys], "entries": []}


def save_db(db, kernel, arch):
    p = db_path(kernel, arch)
    p.parent.mkdir(parents=True, exist_ok=True)
    db["entries"].sort(key=lambda e: (e["functional"], e["bins"]))
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(db, indent=1, sort_keys=True) + "\n")
    tmp.replace(p)



def flash_functional(rule, dtype, D, causal):
    """Head dims that are not a bucket (96, 192...) tune the padded functional
    of their bucket: its entry serves every head dim that pads to it."""
    from tritonsrc.flash.fwd_configs import head_dim_bucket
    bucket = head_dim_bucket(D)
    f = {"dtype": dtype, "BLOCK_DMODEL": bucket, "PADDED_HEAD": bucket != D, "CAUSAL_TYPE": causal,
         "IS_VARLEN": False, "ENABLE_DROPOUT": False}
    if "LOCAL_WINDOW" in rule.functional:  # tuned without window / softcap / ALiBi
        f.update(LOCAL_WINDOW=False, SCORE_MOD=0)
    if "BLOCK_DV" in rule.functional:  # V shares the Q/K head dim
        f["BLOCK_DV"] = 0
    f["ALIGNED16"] = D % 8 == 0
    return f


def hopper_functional(dtype, D, causal, fuse_dq=None):
    """attn_fwd_hopper's functional, or bwd_dkdv_hopper's with fuse_dq (dQ by atomics or not)."""
    f = {"dtype": dtype, "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal}
    if fuse_dq is not None:
        f["FUSE_DQ"] = bool(fuse_dq)
    return f


class FlashCase:
    """Inputs, reference and runner for one (dtype, D, causal, seqlen)."""

    def __init__(self, dtype, D, causal, S):
        import torch
        self.torch = torch
        tdt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        B, H = TOKENS // S, HIDDEN // D
        g = torch.Generator(device="cuda").manual_seed(S + D)
        self.q, self.k, self.v = (torch.randn(B, S, H, D, device="cuda", dtype=tdt, generator=g) for _ in range(3))
        self.do = torch.randn(B, S, H, D, device="cuda", dtype=tdt, generator=g)
        self.causal, self.scale, self.dtype, self.D = causal, D ** -0.5, dtype, D
        from python.jit.flash_fwd import attn_fwd_jit
        self.o, self.lse = attn_fwd_jit(self.q, self.k, self.v, sm_scale=self.scale, causal_type=causal)[:2]

    def run_fwd(self, cfg):
        from python.jit.flash_fwd import attn_fwd_jit
        return attn_fwd_jit(self.q, self.k, self.v, sm_scale=self.scale, causal_type=self.causal, config=cfg)[0]

    def run_fwd_hopper(self, cfg):
        from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
        return attn_fwd_hopper_jit(self.q, self.k, self.v, self.scale, self.causal, cfg)[0]

    def run_fwd_hopper_varlen(self, cfg):
        """The batch packed as B sequences of S tokens (max_seqlen = S: the bins the batched entry has)."""
        from python.jit.flash_fwd_hopper import attn_fwd_hopper_varlen_jit
        B, S, H, D = self.q.shape
        cu = self.torch.arange(0, (B + 1) * S, S, device="cuda", dtype=self.torch.int32)
        q, k, v = (x.view(B * S, H, D) for x in (self.q, self.k, self.v))
        return attn_fwd_hopper_varlen_jit(q, k, v, cu, cu, S, S, self.scale, self.causal, cfg)[0].view(B, S, H, D)

    def run_bwd_hopper(self, cfg, fuse_dq):
        """The whole sm_90 backward (preprocess, bwd_dkdv_hopper, dQ conversion or kernel) as it runs."""
        from python.jit.flash_bwd_hopper import attn_bwd_hopper_jit
        return attn_bwd_hopper_jit(self.do, self.q, self.k, self.v, self.o, self.lse, self.scale, self.causal,
                                   dict(cfg, FUSE_DQ=bool(fuse_dq)))

    def ref_fwd(self):
        t = self.torch
        qt, kt, vt = (x.transpose(1, 2) for x in (self.q, self.k, self.v))
        return t.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=self.causal != 0,
                                                             scale=self.scale).transpose(1, 2)

    def run_bwd(self, kernel, cfg, other):
        from tritonsrc.flash.bwd_configs import pre_config
        from python.jit.flash_bwd import attn_bwd_jit
        full = {"pre": pre_config(self.D), "dkdv": other["dkdv"], "dq": other["dq"]}
        full[kernel] = cfg
        return attn_bwd_jit(self.do, self.q, self.k, self.v, self.o, self.lse, sm_scale=self.scale,
                            causal_type=self.causal, config=full)


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def flash_groups(work, arch, done):
    """{(kernel, functional name, bins): (rule, functional, dtype, D, causal, fuse, [seqlens])} for work of
    (kernel, rule, dtype, D, causal, fuse, seqlen); bins the database has (`done`) and functionals the
    rule does not build are left out. One entry serves every seqlen of its bin, so it is tuned over all
    of them: 8192 and 16384 share the last bin, and each tuned alone, the later replaced the earlier."""
    groups = {}
    for kname, rule, dtype, D, causal, fuse, S in work:
        f = (hopper_functional(dtype, D, causal, fuse) if "_hopper" in kname
             else flash_functional(rule, dtype, D, causal))
        key = (kname, functional_name(f), tuple(bin_of(S, k.bins) for k in rule.autotune_keys))
        if key in done or not rule.valid(f, arch):
            continue
        groups.setdefault(key, (rule, f, dtype, D, causal, fuse, []))[-1].append(S)
    return groups


def case_runner(kname, case, default, fuse, arch):
    """(reference output, run(config), tolerance) of one kernel on a FlashCase."""
    forwards = {"attn_fwd": "run_fwd", "attn_fwd_hopper": "run_fwd_hopper",
                "attn_fwd_hopper_varlen": "run_fwd_hopper_varlen"}
    if kname in forwards:
        return case.ref_fwd(), getattr(case, forwards[kname]), 2e-2
    if kname == "bwd_dkdv_hopper":  # against the default config (validated by the GPU tests)
        return case.run_bwd_hopper(default, fuse), lambda cfg: case.run_bwd_hopper(cfg, fuse), 1e-2
    from tritonsrc.flash.bwd_configs import pick_config
    other = {k: pick_config(arch, case.D, case.dtype, k) for k in ("dkdv", "dq")}
    return case.run_bwd(kname, default, other), lambda cfg: case.run_bwd(kname, cfg, other), 1e-2


def tune(args):
    import torch

    from python import tune_shared as T

    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    kernels = args.kernels.split(",")
    by_name = {r.name: r for r in rules.KERNELS}
    work = [(kname, by_name[kname], dtype, D, causal, fuse, S) for kname in kernels
            for dtype in args.dtypes.split(",") for D in map(int, args.head_dims.split(","))
            for causal in map(int, args.causal.split(","))
            for fuse in (map(int, args.fuse_dq.split(",")) if kname == "bwd_dkdv_hopper" else [None])
            for S in map(int, args.seqlens.split(","))]
    dbs = {k: load_db(k, arch, by_name[k]) for k in kernels}
    # Entries already in a database are kept (a resumed run) unless --retune re-measures them (a new
    # candidate in the space: the tuner otherwise never looks at it for bins it has tuned).
    done = set() if args.retune else {(k, e["functional"], tuple(e["bins"])) for k, db in dbs.items()
                                      for e in db["entries"]}
    groups = flash_groups(work, arch, done)
    print(f"tuning on sm_{arch}: {len(groups)} entries ({len(work)} shapes)", flush=True)
    for i, ((kname, fname, bins), (rule, f, dtype, D, causal, fuse, seqlens)) in enumerate(groups.items(), 1):
        default = dict(rule.tuning.default(f, arch))
        configs = rule.tuning.all_configs(f, arch)
        per_case = []
        for S in seqlens:
            case = FlashCase(dtype, D, causal, S)
            ref, run, tol = case_runner(kname, case, default, fuse, arch)
            refs = ref if isinstance(ref, tuple) else (ref,)

            def error(cfg):
                out = run(cfg)
                torch.cuda.synchronize()
                return max(rel_err(a, b) for a, b in zip(out if isinstance(out, tuple) else (out,), refs))

            per_case.append(T.measure(configs, [None] * len(configs), error, tol,
                                      lambda cfg: kernel_ms(lambda: run(cfg))))
            del case, ref, refs
        results = T.combine_cases(per_case)
        best, _, default_ms = T.best_second_default(results, default)
        entry = T.combined_entry(fname, bins, {"tokens": TOKENS, "hidden": HIDDEN, "seqlen": seqlens[0]}, results,
                                 per_case, [{"seqlen": S} for S in seqlens], default)
        dbs[kname]["entries"] = [e for e in dbs[kname]["entries"]
                                 if not (e["functional"] == fname and e["bins"] == list(bins))] + [entry]
        save_db(dbs[kname], kname, arch)
        print(f"[{i}/{len(groups)}] {kname} {dtype} D={D} causal={causal} S={','.join(map(str, seqlens))}: "
              f"{config_name(best[1])} "
              f"{best[0]:.3f} ms (default {default_ms:.3f} ms, x{default_ms / best[0]:.2f})", flush=True)
        torch.cuda.empty_cache()


def main():
    # Time the cubins the build ships (module doc); set here, not at import: an import (a test)
    # would switch every later JIT launch in the process to the AOT form.
    os.environ.setdefault("AOTRITON_JIT_AOT_FORM", "1")
    if sys.argv[1:2] == ["moe"]:  # the MoE grouped GEMM: python/tune_moe.py
        from python import tune_moe
        ap = tune_moe.add_arguments(argparse.ArgumentParser(prog="tune.py moe", description=tune_moe.__doc__,
                                                            formatter_class=argparse.RawDescriptionHelpFormatter))
        rule = next(r for r in rules.KERNELS if r.name == "fused_moe_gemm")
        tune_moe.tune_moe(ap.parse_args(sys.argv[2:]), rule, load_db, save_db, db_path)
        return
    if sys.argv[1:2] == ["moe_gluon"]:  # the sm_90 Gluon MoE GEMMs: python/tune_moe_gluon.py
        from python import tune_moe_gluon
        ap = tune_moe_gluon.add_arguments(argparse.ArgumentParser(
            prog="tune.py moe_gluon", description=tune_moe_gluon.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
        tune_moe_gluon.tune_moe_gluon(ap.parse_args(sys.argv[2:]), load_db, save_db, db_path)
        return
    if sys.argv[1:2] == ["decode"]:  # the KV-cache decode kernel: python/tune_decode.py
        from python import tune_decode
        ap = tune_decode.add_arguments(argparse.ArgumentParser(
            prog="tune.py decode", description=tune_decode.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
        rule = next(r for r in rules.KERNELS if r.name == "attn_decode")
        tune_decode.tune_decode(ap.parse_args(sys.argv[2:]), rule, load_db, save_db, db_path)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default="attn_fwd,bwd_dkdv,bwd_dq")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--causal", default="0,2")
    ap.add_argument("--seqlens", default="512,1024,2048,4096,16384")
    ap.add_argument("--fuse-dq", default="1", help="bwd_dkdv_hopper: 1 dQ by atomics (the default path), 0 not")
    ap.add_argument("--retune", action="store_true", help="re-measure entries the database already has")
    tune(ap.parse_args())


if __name__ == "__main__":
    main()
