"""What the bench scripts share: the commit their results were measured at, and
writing a result file."""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commit_id(short=True):
    """$AOTRITON_COMMIT (a device copy's .git may be stale), else git's HEAD,
    else "unknown"."""
    if os.environ.get("AOTRITON_COMMIT"):
        return os.environ["AOTRITON_COMMIT"]
    cmd = ["git", "-C", str(REPO), "rev-parse"] + (["--short"] if short else []) + ["HEAD"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(doc, path, out_name):
    """doc as JSON at `path` and, when $OUT is set (a device run), at $OUT/out_name too."""
    for p in [path] + ([os.path.join(os.environ["OUT"], out_name)] if os.environ.get("OUT") else []):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {p}")


def random_weights(torch, E, rows, cols, dtype, device="cuda"):
    """[E, rows, cols] of randn / sqrt(cols) in `dtype` (fp8 included), built one expert at a time:
    the float32 temporaries of a whole DeepSeek-like w1 (30 GB) do not fit an 80 GB GPU twice."""
    w = torch.empty(E, rows, cols, device=device, dtype=dtype)
    for e in range(E):
        w[e] = (torch.randn(rows, cols, device=device) / cols ** 0.5).to(dtype)
    return w


def expert_bytes(*tensors):
    """Bytes one touched expert costs in a decode roofline: the slice of each per-expert tensor
    (weights, scales, zero points: first dim E, the first tensor's); None and tensors not indexed
    by expert (a per-tensor scale) count nothing."""
    E = tensors[0].shape[0]
    return sum(t[0].numel() * t.element_size() for t in tensors if t is not None and t.dim() >= 1 and t.shape[0] == E)


def copy_bandwidth(device="cuda"):
    """python/tune_shared.copy_bandwidth (the repo root is on sys.path in every bench entry point)."""
    import torch
    import triton
    from python.tune_shared import copy_bandwidth as measure
    return measure(torch, triton, device)


def write_experiment(path, rows, bw=None):
    """An experiment's rows as JSON at path, with the GPU, versions, commit and (when measured)
    the copy bandwidth."""
    import torch
    import triton
    doc = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "commit": commit_id(), "rows": rows}
    if bw is not None:
        doc["copy_bandwidth_GBps"] = bw / 1e9
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


def device_line():
    """The GPU and versions, the first line of an experiment's output."""
    import torch
    import triton
    return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}"


def split_k_row(key, cfg, split, gemm, gemm_reduce, base, touched, bw):
    """One split-K experiment row: times gemm() and gemm_reduce() (CUDA-graph replays, median),
    compares the reduced output with base (that of SPLIT_K 1: None on the first call), prints the
    table row. key: {label: value} that names the case. Returns (row, the reduced output)."""
    import triton
    out = gemm_reduce().float()
    base = out if base is None else base
    diff = ((out - base).abs().max() / base.abs().max()).item()
    t_gemm = triton.testing.do_bench_cudagraph(gemm, rep=100, return_mode="median") * 1e3
    t_all = triton.testing.do_bench_cudagraph(gemm_reduce, rep=100, return_mode="median") * 1e3
    name = ",".join(f"{k}={v}" for k, v in sorted(cfg.items()) if k not in ("BLOCK_SIZE_M", "SPLIT_K"))
    row = dict(**key, config=name, split_k=split, gemm_us=t_gemm, total_us=t_all,
               roofline=touched / bw * 1e6 / t_all, max_rel_diff=diff)
    print(f"| {next(iter(key.values()))} | {name} | {split} | {t_gemm:.1f} | {t_all:.1f} | {row['roofline']:.2f} | "
          f"{diff:.1e} |", flush=True)
    return row, out
