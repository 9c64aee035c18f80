"""What the tuners (tune.py, tune_moe.py, tune_decode.py) share: the LUT bin of
a key, GPU timing without host cost, the parallel compile workers, the
check-then-time loop over a candidate list, and saving one database entry.

Compiling is the slow part of tuning and Triton's compiler is single
threaded, so every candidate is compiled ahead in spawned worker processes
(`kernel.warmup` fills Triton's cache); the main process then launches each
one from the cache, checks it against its reference and times it.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def bin_of(value, bins):
    """Index of `value` among ascending upper bounds (the last bin takes the rest):
    the generated launcher's bin_index."""
    for i, b in enumerate(bins[:-1]):
        if value <= b:
            return i
    return len(bins) - 1


def finite_ms(ms):
    """A time for the database: rounded, or None for inf / nan."""
    return round(ms, 5) if ms == ms and ms != float("inf") else None


def kernel_ms(fn, rep_ms=50):
    """Median GPU time of fn() in ms without its host cost: the calls are
    replayed from a CUDA graph (triton.testing.do_bench_cudagraph). A JIT
    launch costs 0.1-0.7 ms of Python (descriptors, argument mapping), as
    long as a whole flash forward at seqlen 2048, so timing each call with
    events (do_bench) ranked configs by launch overhead at short sequences."""
    import triton
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median")
    except RuntimeError as e:  # a runner that cannot be captured (a host sync): timed per call, and said so
        print(f"kernel_ms: no CUDA graph ({str(e).splitlines()[0][:120]}); timing with events", flush=True)
        return triton.testing.do_bench(fn, warmup=10, rep=rep_ms, return_mode="median")


def copy_bandwidth(torch, triton, device="cuda"):
    """Bytes moved (read + write) per second by a 1 GiB device-to-device copy, median of
    triton's do_bench: the roofline every tuner and bench divides by (bench_common wraps it)."""
    src = torch.empty(2 ** 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median")
    del src, dst
    return 2 * 2 ** 30 / (ms * 1e-3)


# ---------------------------------------------------------------- compile workers
def compile_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes started with spawn (CUDA and fork do not mix); they get
    the parent's sys.path, so they import the kernels the same way."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def compile_job(kernel: str, grid, args, kwargs):
    """A launch in a form that pickles to a worker: the kernel as
    "module:function", tensors as their dtype (warmup needs only that)."""
    import torch
    return kernel, grid, [f"dtype:{str(a.dtype).removeprefix('torch.')}" if isinstance(a, torch.Tensor) else a
                          for a in args], kwargs


def candidate_jobs(rule_name: str, functional: dict, arch: int, configs, jit_kernel: str, launch) -> list:
    """The compile jobs of a database entry's candidates: the build's own
    kernel for the entry's functional when the tuner times that form
    (jit_launch.aot_form), else the JIT's (jit_kernel "module:function",
    launch(config) -> (grid, args, kwargs))."""
    from python.jit_launch import aot_form
    if aot_form():
        return [aot_compile_job(rule_name, functional, c, arch) for c in configs]
    return [compile_job(jit_kernel, *launch(c)) for c in configs]


def aot_compile_job(rule_name: str, functional: dict, config: dict, arch: int):
    """A compile of the build's own kernel (compile_kernel.compile_one) for a
    worker: the tuner then times the cubin the build ships (jit_launch.aot_form)."""
    return "aot", rule_name, dict(functional), dict(config), arch


def warm(job):
    """Worker: compile one config (no launch) so the main process hits Triton's cache.
    Returns None, or the compile error in one line."""
    import torch

    if job[0] == "aot":
        from python import compile_kernel, rules
        _, rule_name, functional, config, arch = job
        rule = next(r for r in rules.KERNELS if r.name == rule_name)
        try:
            compile_kernel.compile_one(rule, functional, config, arch)
            return None
        except Exception as e:  # reported as a rejected candidate by the main process
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    kernel, grid, args, kwargs = job
    module, function = kernel.split(":")
    fn = getattr(importlib.import_module(module), function)
    args = [getattr(torch, a[len("dtype:"):]) if isinstance(a, str) and a.startswith("dtype:") else a for a in args]
    try:
        fn.warmup(*args, grid=grid, **kwargs)
        return None
    except Exception as e:  # reported as a rejected candidate by the main process
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def compile_all(pool, jobs) -> list:
    """Compiles every job in the pool; each one's error (None: it compiled, or
    the worker itself died and the main process compiles it on first launch)."""
    futures = [pool.submit(warm, j) for j in jobs]
    out = []
    for future in futures:
        try:
            out.append(future.result())
        except Exception as e:
            print(f"  compile worker failed ({type(e).__name__}); compiling in the main process", flush=True)
            out.append(None)
    return out


# ---------------------------------------------------------------- one database entry
def measure(candidates, compile_errors, error, tol, bench) -> list:
    """(ms, config, verdict) per candidate, fastest first: a candidate that did
    not compile, failed to run or whose error(config) is not below tol gets
    inf and says why; the others are timed by bench(config)."""
    results = []
    for cfg, err in zip(candidates, compile_errors):
        if err:
            results.append((float("inf"), cfg, f"compile: {err}"))
            continue
        try:
            e = error(cfg)
        except Exception as ex:  # out of resources etc.
            results.append((float("inf"), cfg, f"failed: {type(ex).__name__}"))
            continue
        if not e < tol:
            results.append((float("inf"), cfg, f"wrong: rel err {e:.2e}"))
            continue
        results.append((bench(cfg), cfg, "ok"))
    results.sort(key=lambda r: r[0])
    return results


def combine_cases(per_case) -> list:
    """measure()'s results on several shapes that share one database entry, as
    one list: a config's time is the geometric mean of its times (the same
    ranking as the geometric mean of its ratios to each shape's fastest); a config that
    failed on any shape gets inf and that shape's verdict."""
    import math
    combined = []
    for cfg in [r[1] for r in per_case[0]]:
        runs = [next(r for r in res if r[1] == cfg) for res in per_case]
        bad = next((r for r in runs if r[0] == float("inf")), None)
        if bad:
            combined.append((float("inf"), cfg, bad[2]))
        else:
            combined.append((math.exp(sum(math.log(r[0]) for r in runs) / len(runs)), cfg, "ok"))
    combined.sort(key=lambda r: r[0])
    return combined


def combined_entry(fname, bins, shape, results, per_case, runs, default):
    """The database entry of one bin timed in several runs (measure()'s results per run in per_case,
    combine_cases' ranking in `results`; `runs` labels each run, e.g. {"M": 64, "seed": 1}): the pick
    is the ranking's best; time_ms and the runner-up's and default's times are the first run's (the
    default may lie outside the space: no time); with more than one run, score_ms holds the combined
    time and tuned_over every run's."""
    from python.kernel_rules import config_name
    best, second, _ = best_second_default(results, default)
    ms_of = lambda res, cfg: next((r[0] for r in res if r[1] == cfg), float("nan"))  # noqa: E731
    entry = {"functional": fname, "bins": list(bins), "shape": shape, "config": best[1],
             "time_ms": round(ms_of(per_case[0], best[1]), 5),
             "runner_up": {"config": second[1], "time_ms": round(ms_of(per_case[0], second[1]), 5)},
             "default_ms": finite_ms(ms_of(per_case[0], default)), "candidates": len(results),
             "rejected": [[config_name(r[1]), r[2]] for r in results if r[2] != "ok"]}
    if len(runs) > 1:
        entry["score_ms"] = round(best[0], 5)
        entry["runner_up"]["score_ms"] = round(second[0], 5)
        entry["tuned_over"] = [{**label, "time_ms": round(ms_of(res, best[1]), 5),
                                "default_ms": finite_ms(ms_of(res, default)), "fastest_ms": round(res[0][0], 5)}
                               for label, res in zip(runs, per_case)]
    return entry


def best_second_default(results, default):
    """The fastest result, the runner-up (the fastest again when it is the only
    valid one) and the default config's time (nan when it was not measured)."""
    best = results[0]
    second = results[1] if len(results) > 1 and results[1][0] < float("inf") else best
    default_ms = next((r[0] for r in results if r[1] == default), float("nan"))
    return best, second, default_ms


def store_entry(db, entry, save, db_file: Path, arch: int):
    """Replaces the entry with the same functional and bins, saves the
    database (save()), and with $OUT set copies it to $OUT/tuning/sm_<arch>
    (a GPU session's results come back from there)."""
    db["entries"] = [e for e in db["entries"]
                     if not (e["functional"] == entry["functional"] and e["bins"] == entry["bins"])]
    db["entries"].append(entry)
    save()
    if os.environ.get("OUT"):
        dst = Path(os.environ["OUT"]) / "tuning" / f"sm_{arch}"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(db_file, dst)
