"""KV-cache decode tuner: fills tuning/sm_<arch>/attn_decode.json, keyed like
the rule's LUT on (functional, bin of keys per split).

    python python/tune.py decode [--dtypes bf16] [--head-dims 128] [--paged 1,0] [--page-size 64]
                                 [--batches 1,8,64] [--context 32768] [--heads 32,4]
                                 [--space quick|all] [--budget-s 150] [--jobs 16]

The shapes are bench/bench_decode.py's (one query token, 32 q / 4 kv heads,
random block table): for each (dtype, head dim, paged, batch) the split count
is the operator's (decode_configs.choose_splits, the mirror of
flash_decode.cc), and the entry's bin is that of cdiv(capacity, splits):
batch 1, 8, 64 at 32k tokens land in the three bins (short, medium, long
splits). Every candidate config of the rule's tuning space (`--space quick`:
BLOCK_M 16 when the query rows fit one tile, BLOCK_N >= 32) is compiled ahead
in parallel worker processes, checked against a float32 SDPA reference on the
same (gathered) cache, outputs poisoned first, then timed as the operator runs
it (attn_decode + combine, one CUDA-graph replay, median). Entries are saved
after each one, so a stopped run (or one that hit --budget-s) resumes where it
stopped; with $OUT set the database is also copied there. generate.py
compiles the winners into the LUT; functionals without an entry keep the
default config (tritonsrc/flash/decode_configs.py).
"""
from __future__ import annotations

import os
import time

from python import tune_shared as T
from python.kernel_rules import config_name, functional_name
from tritonsrc.flash import decode_configs as DC

TOL = {"fp16": 5e-3, "bf16": 1e-2}  # rel. Frobenius error vs float32 on the same cache
KERNEL = "tritonsrc.flash.decode:attn_decode"  # what the compile workers warm up
bin_of = T.bin_of


def quick_space(configs, rows):
    """Plausible decode configs: one query tile when the rows (query tokens x
    GQA group) fit 16, and tiles of at least 32 keys (16-key tiles halve the
    bytes per loop iteration for no gain at these lengths)."""
    return [c for c in configs if (c["BLOCK_M"] == 16 or rows > 16) and c["BLOCK_N"] >= 32]


# ---------------------------------------------------------------- one decode case
class DecodeCase:
    """One decode step of the benchmark family, with its float32 reference."""

    def __init__(self, dtype, D, paged, B, context, hq, hk, page, num_sms, seed=0):
        import torch
        self.torch = torch
        tdt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        self.dtype = dtype
        g = torch.Generator(device="cuda").manual_seed(seed + B * 7 + D)
        self.q = torch.randn(B, 1, hq, D, device="cuda", dtype=tdt, generator=g)
        mb = -(-context // page)
        if paged:
            nb = B * mb
            self.k = torch.randn(nb, page, hk, D, device="cuda", dtype=tdt, generator=g)
            self.v = torch.randn(nb, page, hk, D, device="cuda", dtype=tdt, generator=g)
            self.table = torch.randperm(nb, device="cuda", generator=g).view(B, mb).to(torch.int32)
            capacity = mb * page
        else:
            self.k = torch.randn(B, context, hk, D, device="cuda", dtype=tdt, generator=g)
            self.v = torch.randn(B, context, hk, D, device="cuda", dtype=tdt, generator=g)
            self.table = None
            capacity = context
        self.cs = torch.full((B,), context, dtype=torch.int32, device="cuda")
        self.scale = D ** -0.5
        self.splits = DC.choose_splits(B, 1, hq, hk, capacity, num_sms)
        self.keys_per_split = -(-capacity // self.splits)
        self.kv_bytes = 2 * B * context * hk * D * self.q.element_size()
        self.shape = dict(batch=B, context=context, hq=hq, hk=hk, d=D, page_size=page if paged else None,
                          num_splits=self.splits, keys_per_split=self.keys_per_split)
        self.o = torch.empty_like(self.q)
        self.lse = torch.empty(B, hq, 1, device="cuda", dtype=torch.float32)
        self.ref = self._reference(context, page)

    def _reference(self, context, page):
        torch = self.torch
        if self.table is None:
            kc, vc = self.k, self.v
        else:
            idx = torch.arange(context, device="cuda")
            kc = self.k[self.table[:, idx // page].long(), idx % page]
            vc = self.v[self.table[:, idx // page].long(), idx % page]
        ref = torch.nn.functional.scaled_dot_product_attention(
            self.q.transpose(1, 2).float(), kc.transpose(1, 2).float(), vc.transpose(1, 2).float(),
            scale=self.scale, enable_gqa=True).transpose(1, 2)
        return ref

    def run(self, cfg):
        from python.jit.flash_decode import decode_jit
        decode_jit(self.q, self.k, self.v, self.cs, sm_scale=self.scale, block_table=self.table,
                   num_splits=self.splits, config=cfg, out=self.o, lse_out=self.lse)

    def launch(self, cfg):
        from python.jit.flash_decode import decode_launch_args
        return decode_launch_args(self.q, self.k, self.v, self.cs, sm_scale=self.scale, block_table=self.table,
                                  num_splits=self.splits, config=cfg)

    def error(self, cfg):
        self.o.fill_(float("nan"))
        self.run(cfg)
        self.torch.cuda.synchronize()
        o = self.o.float()
        if not self.torch.isfinite(o).all():
            return float("inf")
        return ((o - self.ref).norm() / self.ref.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- the tuning loop
def tune_decode(args, rule, load_db, save_db, db_path):
    import torch
    import triton

    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    bw = T.copy_bandwidth(torch, triton)
    db = load_db(rule.name, arch, rule)
    db["keys"] = [k.arg for k in rule.autotune_keys]
    bins_of = rule.autotune_keys[0].bins
    done = {(e["functional"], tuple(e["bins"])) for e in db["entries"]}
    hq, hk = map(int, args.heads.split(","))
    work = [(dtype, D, bool(int(p)), B) for dtype in args.dtypes.split(",") for D in map(int, args.head_dims.split(","))
            for p in args.paged.split(",") for B in map(int, args.batches.split(","))]
    start = time.time()
    pool = T.compile_pool(args.jobs)
    print(f"decode tuning on sm_{arch} ({num_sms} SMs, copy bandwidth {bw / 1e9:.0f} GB/s): {len(work)} entries, "
          f"{args.jobs} compile workers, budget {args.budget_s:.0f} s", flush=True)
    print("| # | dtype | D | paged | B | splits | keys/split | best config | ms | roofline | default ms | x | "
          "candidates |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for i, (dtype, D, paged, B) in enumerate(work, 1):
        if time.time() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent after {i - 1} of {len(work)} entries: "
                  f"run the same command again to resume", flush=True)
            break
        f = {"dtype": dtype, "BLOCK_DMODEL": DC.decode_head_bucket(D), "PAGED": paged, "SCORE_MOD": 0,
             "PAGE_TILES": DC.page_tiles(args.page_size) if paged else 0}
        fname = functional_name(f)
        case = DecodeCase(dtype, D, paged, B, args.context, hq, hk, args.page_size, num_sms)
        bins = [bin_of(case.keys_per_split, bins_of)]
        if not rule.valid(f, arch) or (fname, tuple(bins)) in done:
            del case
            continue
        default = dict(rule.tuning.default(f, arch))
        space = rule.tuning.all_configs(f, arch)
        cands = quick_space(space, hq // hk) if args.space == "quick" else space
        cands = ([default] if default not in cands else []) + cands
        # decode_jit launches through jit_launch.launch: the build's cubin in the AOT form.
        compile_err = T.compile_all(pool, T.candidate_jobs(rule.name, f, arch, cands, KERNEL, case.launch))
        bench = lambda cfg: T.kernel_ms(lambda: case.run(cfg), args.rep_ms)  # noqa: E731
        results = T.measure(cands, compile_err, case.error, TOL[dtype], bench)
        best, second, default_ms = T.best_second_default(results, default)
        if best[0] == float("inf"):
            print(f"| {i} | {dtype} | {D} | {int(paged)} | {B} | {case.splits} | {case.keys_per_split} | "
                  f"no valid config | | | | | {len(results)} |", flush=True)
            continue
        roof = case.kv_bytes / bw * 1e3
        entry = {"functional": fname, "bins": bins, "shape": case.shape, "config": best[1],
                 "time_ms": round(best[0], 5), "roofline": round(roof / best[0], 3),
                 "runner_up": {"config": second[1], "time_ms": round(second[0], 5)},
                 "default_ms": T.finite_ms(default_ms), "candidates": len(results),
                 "rejected": [[config_name(r[1]), r[2]] for r in results if r[2] != "ok"]}
        T.store_entry(db, entry, lambda: save_db(db, rule.name, arch), db_path(rule.name, arch), arch)
        done.add((fname, tuple(bins)))
        print(f"| {i} | {dtype} | {D} | {int(paged)} | {B} | {case.splits} | {case.keys_per_split} | "
              f"{config_name(best[1])} | {best[0]:.4f} | {roof / best[0]:.2f} | {default_ms:.4f} | "
              f"{default_ms / best[0]:.2f} | {len(results)} |", flush=True)
        del case
        torch.cuda.empty_cache()
    pool.shutdown()
    print(f"done in {time.time() - start:.0f} s; database {db_path(rule.name, arch)}", flush=True)
    return db


def add_arguments(ap):
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--head-dims", default="128")
    ap.add_argument("--paged", default="1,0", help="1 paged, 0 contiguous")
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--batches", default="1,8,64", help="at --context 32768: one entry per keys-per-split bin")
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--heads", default="32,4", help="q heads, kv heads")
    ap.add_argument("--space", choices=["quick", "all"], default="quick")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new entries after this")
    ap.add_argument("--jobs", type=int, default=max(1, min(16, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--rep-ms", type=int, default=30)
    return ap
