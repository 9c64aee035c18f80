"""JIT launcher, correctness check and benchmark for the Gluon Hopper flash
forward (flash_fwd_gluon_kernel.py, flash_fwd_gluon_ws_kernel.py). Needs an
sm_90 GPU. The GPU run: bench/experiments/run_gluon_experiment.sh.

    python bench/experiments/flash_fwd_gluon.py --check [--check-variants V,...]
    python bench/experiments/flash_fwd_gluon.py --bench [--dtypes bf16,fp16] [--variants V,...]
        [--json PATH] [--budget-s 140] [--gluon-only]

--check: fresh random inputs (sequence tails, GQA, causal none / top-left /
bottom-right with seqlen_q != seqlen_k, rows that see no key), outputs
poisoned with NaN first; passes when the error against a float32 reference is
at most 2x that of the same math done in the low-precision dtype (the
flash-attn criterion), for O and LSE, and fully masked rows give O = 0, LSE = -inf.
--bench: batch*seqlen = 16k tokens, hidden 2048, seqlen 512/2048/8192, D 64/128,
causal none / bottom-right: TFLOP/s (median of triton.testing.do_bench) of
the Gluon variants, the production Triton kernel (tritonsrc/flash/fwd.py
through fwd_jit, the AOT build's kernel and tuning), and SDPA's flash and
cuDNN backends; every Gluon row is checked against a float32 reference on a
slice first (a wrong variant is reported, not timed). --gluon-only times only
the Gluon variants and adds them to the rows already in --json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton

_T0 = time.time()
REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "python")]  # tritonsrc, and the rules its JIT launchers read

from bench.experiments.flash_fwd_gluon_kernel import attn_fwd_gluon  # noqa: E402
from bench.experiments.flash_fwd_gluon_ws_kernel import attn_fwd_gluon_ws  # noqa: E402

# name -> (BLOCK_M, BLOCK_N, NUM_STAGES, SCHEDULE, num_warps); SCHEDULE 0 serial,
# 1 FA3 order, 2 next-Q K^T (flash_fwd_gluon_kernel.py).
# nextqk_n64_s4 (D 64) and serial_n64_s2 fit two CTAs per SM (<= 128 registers,
# <= 113 KiB shared memory): the two CTAs then interleave on their own.
VARIANTS = {
    "nextqk_n128_s3": (128, 128, 3, 2, 8),
    "serial_n128_s3": (128, 128, 3, 0, 8),
    "nextqk_n64_s4": (128, 64, 4, 2, 8),
    "serial_n64_s2": (128, 64, 2, 0, 8),
    "fa3_n128_s3": (128, 128, 3, 1, 8),
    # Warp-specialized (flash_fwd_gluon_ws_kernel.py; 4 warps per partition):
    # 3 ping-pong between the two consumer warpgroups, 4 the same without the turns.
    "pingpong_n128_s3": (128, 128, 3, 3, 4),
    "wsnoturn_n128_s3": (128, 128, 3, 4, 4),
    # 5: ping-pong with the next-Q K^T order inside each consumer (compiled
    # only: spills 80 B at D = 128; docs/notes-flash-perf.md).
    "ppnextqk_n128_s3": (128, 128, 3, 5, 4),
}
BENCH_VARIANTS = ["nextqk_n128_s3", "serial_n128_s3", "nextqk_n64_s4", "serial_n64_s2"]
DEFAULT_VARIANT = "nextqk_n128_s3"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _scratch(size, alignment, stream):
    # Device-side TMA descriptors live in Triton's global scratch.
    return torch.empty(size, dtype=torch.int8, device="cuda")


def attn_fwd_gluon_jit(q, k, v, *, sm_scale, causal_type=0, variant=DEFAULT_VARIANT, out=None, lse_out=None):
    """q (B, Sq, Hq, D), k/v (B, Sk, Hk, D), fp16/bf16, D in (64, 128). Returns
    (o (B, Sq, Hq, D), lse (B, Hq, Sq) float32, natural log)."""
    kernel, grid, args, kwargs, o, lse = launch_plan(q, k, v, sm_scale=sm_scale, causal_type=causal_type,
                                                     variant=variant, out=out, lse_out=lse_out)
    triton.set_allocator(_scratch)
    kernel[grid](*args, **kwargs)
    return o, lse


def launch_plan(q, k, v, *, sm_scale, causal_type=0, variant=DEFAULT_VARIANT, out=None, lse_out=None):
    """Checks the inputs and returns (kernel, grid, args, kwargs, o, lse) for
    one launch (the CPU test compiles through it with kernel.warmup)."""
    if not (q.dtype == k.dtype == v.dtype and q.dtype in (torch.float16, torch.bfloat16)):
        raise ValueError(f"q/k/v must share dtype fp16 or bf16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"expected q (B, Sq, Hq, D) and k, v (B, Sk, Hk, D), got {q.shape}, {k.shape}, {v.shape}")
    batch, seqlen_q, hq, head_dim = q.shape
    seqlen_k, hk = k.shape[1], k.shape[2]
    if head_dim not in (64, 128) or k.shape[3] != head_dim or k.shape[0] != batch:
        raise ValueError(f"head_dim must be 64 or 128 and match across q/k/v, got {q.shape}, {k.shape}")
    if hq % hk != 0:
        raise ValueError(f"num_heads_q {hq} must be a multiple of num_heads_k {hk}")
    if min(batch, seqlen_q, seqlen_k, hk) == 0:
        raise ValueError(f"empty input (a TMA descriptor needs nonzero sizes): q {tuple(q.shape)}, k {tuple(k.shape)}")
    if causal_type not in (0, 1, 2) or not sm_scale > 0:
        raise ValueError(f"causal_type must be 0, 1 or 2 and sm_scale > 0, got {causal_type}, {sm_scale}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    block_m, block_n, stages, schedule, warps = VARIANTS[variant]
    o = torch.empty_like(q, memory_format=torch.contiguous_format) if out is None else out
    lse = torch.empty((batch, hq, seqlen_q), dtype=torch.float32, device=q.device) if lse_out is None else lse_out
    if o.shape != q.shape or o.dtype != q.dtype or lse.shape != (batch, hq, seqlen_q) or lse.dtype != torch.float32 \
            or lse.stride(2) != 1:
        raise ValueError(f"out must be like q {tuple(q.shape)}, lse_out float32 ({batch}, {hq}, {seqlen_q}) "
                         f"with a contiguous last dim")
    for name, t in (("q", q), ("k", k), ("v", v), ("out", o)):
        # TMA: 16-byte aligned base and row strides, unit last stride.
        if t.stride(3) != 1 or t.data_ptr() % 16 or any(s * t.element_size() % 16 for s in t.stride()[:3]):
            raise ValueError(f"{name}: last dim must be contiguous, base and strides 16-byte aligned")
    grid = (triton.cdiv(seqlen_q, block_m), batch * hq)
    kernel = attn_fwd_gluon_ws if schedule >= 3 else attn_fwd_gluon
    args = (q, k, v, o, lse, float(sm_scale),
            q.stride(0), q.stride(2), q.stride(1),
            k.stride(0), k.stride(2), k.stride(1),
            v.stride(0), v.stride(2), v.stride(1),
            o.stride(0), o.stride(2), o.stride(1),
            lse.stride(0), lse.stride(1),
            hq, hk, seqlen_q, seqlen_k)
    kwargs = dict(HEAD_DIM=head_dim, CAUSAL_TYPE=int(causal_type), BLOCK_M=block_m, BLOCK_N=block_n,
                  NUM_STAGES=stages, SCHEDULE=schedule, num_warps=warps)
    return kernel, grid, args, kwargs, o, lse


def reference(q, k, v, sm_scale, causal_type, dtype):
    """(o, lse) in `dtype` math: float32 for the reference, q.dtype for the
    low-precision baseline. Fully masked rows: o = 0, lse = -inf."""
    hq, hk = q.shape[2], k.shape[2]
    qt = q.transpose(1, 2).to(dtype)
    kt = k.transpose(1, 2).repeat_interleave(hq // hk, dim=1).to(dtype)
    vt = v.transpose(1, 2).repeat_interleave(hq // hk, dim=1).to(dtype)
    s = (qt @ kt.transpose(-1, -2)).float() * sm_scale
    sq, sk = s.shape[-2], s.shape[-1]
    if causal_type:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (sk - sq if causal_type == 2 else 0), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    o = p.to(dtype) @ vt
    return o.transpose(1, 2), lse


def check_one(q, k, v, causal_type, variant, out=None, lse_out=None):
    """Error of the kernel vs float32 against the low-precision math's error.
    Returns (ok, message)."""
    sm_scale = q.shape[-1] ** -0.5
    o, lse = attn_fwd_gluon_jit(q, k, v, sm_scale=sm_scale, causal_type=causal_type, variant=variant,
                                out=out, lse_out=lse_out)
    o_ref, lse_ref = reference(q, k, v, sm_scale, causal_type, torch.float32)
    o_low, lse_low = reference(q, k, v, sm_scale, causal_type, q.dtype)
    dead = torch.isinf(lse_ref)  # rows that see no key
    if not torch.equal(torch.isinf(lse) & (lse < 0), dead):
        return False, "LSE -inf pattern differs from the reference"
    err_o = (o.float() - o_ref).abs().max().item()
    base_o = (o_low.float() - o_ref).abs().max().item()
    live = ~dead
    err_l = (lse - lse_ref)[live].abs().max().item() if live.any() else 0.0
    base_l = (lse_low - lse_ref)[live].abs().max().item() if live.any() else 0.0
    ok = err_o <= 2 * base_o and err_l <= 2 * base_l and not o.isnan().any().item()
    return ok, f"O err {err_o:.2e} (low-precision math {base_o:.2e}), LSE err {err_l:.2e} ({base_l:.2e})"


def run_check(dtypes, variants):
    # (B, Sq, Sk, Hq, Hk): tails in both sequences, GQA, Sq > Sk (bottom-right
    # leaves rows with no key), Sq < Sk, exact multiples of the tiles.
    shapes = [(2, 300, 457, 4, 2), (1, 457, 300, 4, 4), (2, 256, 512, 2, 1), (1, 129, 64, 2, 2)]
    failures = 0
    for dname in dtypes:
        dtype = _DTYPES[dname]
        for variant in variants:
            for d in (64, 128):
                for causal_type in (0, 1, 2):
                    for (b, sq, sk, hq, hk) in shapes:
                        g = torch.Generator(device="cuda").manual_seed(sq * 1000 + sk * 7 + d + causal_type)
                        q = torch.randn(b, sq, hq, d, device="cuda", dtype=dtype, generator=g)
                        k = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype, generator=g)
                        v = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype, generator=g)
                        o = torch.full_like(q, float("nan"))
                        lse = torch.full((b, hq, sq), float("nan"), device="cuda")
                        try:
                            ok, msg = check_one(q, k, v, causal_type, variant, out=o, lse_out=lse)
                        except Exception as e:  # noqa: BLE001 - report and go on
                            ok, msg = False, f"{type(e).__name__}: {str(e)[:300]}"
                        failures += not ok
                        print(f"{'ok  ' if ok else 'FAIL'} {variant} {dname} D={d} causal={causal_type} "
                              f"B={b} Sq={sq} Sk={sk} Hq={hq} Hk={hk}: {msg}", flush=True)
    print(f"check: {failures} failures")
    return failures


def _warm(task):
    """Compile one kernel by running it once on tiny inputs, in a worker
    process: the compile lands in Triton's disk cache, and the benchmark's
    launch with the same specialization (sizes unspecialized, 16-divisible
    strides) loads it from there. Returns an error message or None."""
    kind, dname, d, causal_type, variant = task
    try:
        dtype = _DTYPES[dname]
        q, k, v = (torch.randn(1, 128, 2, d, device="cuda", dtype=dtype) for _ in range(3))
        if kind == "gluon":
            attn_fwd_gluon_jit(q, k, v, sm_scale=d ** -0.5, causal_type=causal_type, variant=variant)
        else:
            from tritonsrc.flash.fwd_configs import pick_config
            from tritonsrc.flash.fwd_jit import attn_fwd_jit
            attn_fwd_jit(q, k, v, sm_scale=d ** -0.5, causal_type=causal_type, config=pick_config(90, d, dname))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # noqa: BLE001 - the serial run will report it again
        return f"{task}: {type(e).__name__}: {str(e)[:200]}"


def warm_up(tasks, processes):
    """Compile the run's kernels in parallel before timing anything (a serial
    JIT spends most of a short GPU session compiling)."""
    import multiprocessing
    t0 = time.time()
    tasks = sorted(set(tasks))
    try:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(tasks))) as pool:
            errors = [e for e in pool.imap_unordered(_warm, tasks) if e]
    except Exception as e:  # noqa: BLE001 - fall back to compiling on first use
        errors = [f"warm-up pool: {type(e).__name__}: {e}"]
    print(f"warm-up: {len(tasks)} kernels compiled in {time.time() - t0:.0f} s by {processes} processes, "
          f"{len(errors)} errors" + "".join(f"\n  {e}" for e in errors[:5]), flush=True)


def commit():
    if os.environ.get("AOTRITON_COMMIT"):
        return os.environ["AOTRITON_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def t_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def run_bench(dtypes, first_variants, other_variants, seqlens, budget_s, on_row=lambda rows: None,
              previous_rows=None):
    """previous_rows (a list of earlier rows): time only the Gluon variants and
    add them to the matching earlier row (SDPA / Triton numbers kept)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from tritonsrc.flash.fwd_configs import pick_config
    from tritonsrc.flash.fwd_jit import attn_fwd_jit
    tokens, hidden = 16384, 2048
    rows = []
    # D = 128 first (the largest gap to cuDNN), dtypes interleaved: a run cut
    # by the time budget loses the D = 64 causal rows of both dtypes last.
    for d in (128, 64):
        h = hidden // d
        for causal in (False, True):
            for s in seqlens:
                for dname in dtypes:
                    dtype = _DTYPES[dname]
                    variants = first_variants if dname == dtypes[0] else other_variants
                    if time.time() - _T0 > budget_s:
                        print(f"time budget ({budget_s:.0f} s since start) spent: skipping {dname} D={d} "
                              f"causal={causal} S={s}", flush=True)
                        continue
                    b = tokens // s
                    g = torch.Generator(device="cuda").manual_seed(s * 7 + d)
                    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=g) for _ in range(3))
                    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
                    flops = 4 * b * h * s * s * d / (2 if causal else 1)
                    tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
                    ct = 2 if causal else 0
                    row = {"dtype": dname, "D": d, "causal": causal, "causal_type": ct, "seqlen": s, "batch": b,
                           "heads": h}
                    earlier = [r for r in previous_rows or [] if all(r.get(key_) == row[key_] for key_ in row)]
                    if previous_rows is not None:
                        if not earlier:
                            print(f"no earlier row for {row}: skipped", flush=True)
                            continue
                        row = earlier[0]
                    sdpa = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION))
                    for name, backend in ([] if earlier else sdpa):
                        try:
                            with sdpa_kernel(backend):
                                row[f"{name}_tflops"] = tf(t_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
                                    qt, kt, vt, is_causal=causal)))
                        except Exception as e:  # noqa: BLE001
                            row[f"{name}_tflops"] = None
                            row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    if not earlier:
                        cfg = pick_config(90, d, dname)
                        row["triton_tflops"] = tf(t_ms(lambda: attn_fwd_jit(q, k, v, sm_scale=d ** -0.5,
                                                                            causal_type=ct, config=cfg)))
                    # Correctness on a slice (batch 0, 2 heads): the full reference would not fit at 8k.
                    qs, ks, vs = (x[:1, :, :2].contiguous() for x in (q, k, v))
                    for variant in variants:
                        key = f"gluon_{variant}"
                        try:
                            ok, msg = check_one(qs, ks, vs, ct, variant)
                            if not ok:
                                row[key + "_error"] = "wrong: " + msg
                                row[key + "_tflops"] = None
                                continue
                            row[key + "_tflops"] = tf(t_ms(lambda: attn_fwd_gluon_jit(
                                q, k, v, sm_scale=d ** -0.5, causal_type=ct, variant=variant)))
                        except Exception as e:  # noqa: BLE001 - report and go on
                            row[key + "_tflops"] = None
                            row[key + "_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    if not earlier:
                        rows.append(row)
                    on_row(previous_rows if previous_rows is not None else rows)
                    print(format_row(row, variants), flush=True)
                    del q, k, v, qt, kt, vt
    return previous_rows if previous_rows is not None else rows


def format_row(row, variants):
    def f(x):
        return "  -  " if x is None else f"{x:5.0f}"
    best = max((row.get(f"gluon_{v}_tflops") or 0.0 for v in variants), default=0.0)
    ratios = ""
    if best:
        ratios = "  best gluon: " + " ".join(
            f"{best / row[k]:.2f}x {k[:-7]}" for k in ("cudnn_tflops", "flash_tflops", "triton_tflops") if row.get(k))
    errs = " ".join(f"[{k}: {row[k][:120]}]" for k in row if k.endswith("_error"))
    return (f"{row['dtype']} D={row['D']:3d} causal_type={row['causal_type']} S={row['seqlen']:5d}: "
            f"cudnn {f(row.get('cudnn_tflops'))} flash {f(row.get('flash_tflops'))} "
            f"triton {f(row.get('triton_tflops'))} | "
            + " ".join(f"{v} {f(row.get(f'gluon_{v}_tflops'))}" for v in variants) + ratios + (" " + errs if errs else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--dtypes", default="bf16,fp16")
    ap.add_argument("--variants", default=",".join(BENCH_VARIANTS),
                    help=f"timed for the first dtype; known: {', '.join(VARIANTS)}")
    ap.add_argument("--other-dtype-variants", default=DEFAULT_VARIANT,
                    help="variants timed for the dtypes after the first (keeps the run short)")
    ap.add_argument("--check-variants", default=DEFAULT_VARIANT)
    ap.add_argument("--seqlens", default="512,2048,8192")
    ap.add_argument("--budget-s", type=float, default=140.0,
                    help="start no benchmark row later than this many seconds after the process started")
    ap.add_argument("--json", default=str(REPO / "bench/results/flash_gluon_experiment_sm90.json"))
    ap.add_argument("--warm-processes", type=int, default=0,
                    help="compile every kernel of the run first in this many processes (0: off)")
    ap.add_argument("--gluon-only", action="store_true",
                    help="time only the Gluon variants and add them to the rows already in --json")
    args = ap.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        sys.exit("needs an sm_90 (Hopper) GPU")
    dtypes = args.dtypes.split(",")
    variants = args.variants.split(",")
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    status = 0
    previous = None
    if args.gluon_only:
        previous = json.loads(Path(args.json).read_text())
    meta = previous or {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "commit": commit(), "command": " ".join(sys.argv),
            "tokens": 16384, "hidden": 2048, "variants": {v: VARIANTS[v] for v in variants}}
    if args.warm_processes > 0:
        tasks = []
        if args.check:
            tasks += [("gluon", dn, d, ct, v) for dn in dtypes for v in args.check_variants.split(",")
                      for d in (64, 128) for ct in (0, 1, 2)]
        if args.bench:
            for i, dn in enumerate(dtypes):
                for v in (variants if i == 0 else args.other_dtype_variants.split(",")):
                    tasks += [("gluon", dn, d, ct, v) for d in (64, 128) for ct in (0, 2)]
                if not args.gluon_only:
                    tasks += [("triton", dn, d, ct, "") for d in (64, 128) for ct in (0, 2)]
        warm_up(tasks, args.warm_processes)
    if args.check:
        failures = run_check(dtypes, args.check_variants.split(","))
        meta.setdefault("check_failures", {})[args.check_variants] = failures
        status |= failures > 0
    if args.bench:
        def save(rows):  # after every row: a run cut short by a timeout keeps what it measured
            meta["rows"] = rows
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
        if previous is not None:
            meta.setdefault("merged_commands", []).append(" ".join(sys.argv))
            for v in variants:
                meta.setdefault("variants", {})[v] = VARIANTS[v]
        save(run_bench(dtypes, variants, args.other_dtype_variants.split(","),
                       [int(s) for s in args.seqlens.split(",")], args.budget_s, save,
                       previous["rows"] if previous is not None else None))
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
