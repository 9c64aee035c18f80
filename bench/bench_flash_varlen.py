"""Flash attention forward on packed variable-length batches (aotriton.flash_attn_varlen_func), against the
batched call on the same tokens (aotriton and SDPA's cuDNN backend) where every sequence has one length.
16k tokens, hidden 2048, as bench_flash.py.

    python bench/bench_flash_varlen.py [--dtype bf16] [--seqlens 512,2048,8192] [--head-dims 64,128]
                                       [--json bench/results/flash_varlen_sm90.json]

Rows: "equal" packs B sequences of seqlen S (the batched peers do the same work); "ragged" draws B lengths
uniformly from [S/2, 3S/2) with a fixed seed and counts its own FLOPs (no batched peer). Medians of
triton.testing.do_bench; TFLOP/s count 4 * sum(Sq * Sk) * H * D (causal: sum(Sq * (Sk + 1) / 2)). Which sm_90
kernel serves the varlen call follows AOTRITON_FLASH_HOPPER (unset: the Gluon kernel where built; "0": the
Triton one): run twice to compare the routes (bench/experiments/flash_fwd_routes.sh does so for bench_flash).
"""
import argparse
import json
import sys
from pathlib import Path

from bench_common import commit_id

REPO = Path(__file__).resolve().parent.parent


def t_ms(fn):
    import triton
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def lengths(kind, S, tokens):
    import random
    B = tokens // S
    if kind == "equal":
        return [S] * B
    rng = random.Random(S)
    return [rng.randrange(S // 2, 3 * S // 2) for _ in range(B)]


def rows_for(dname, dtype, D, S, causal, kind, tokens, hidden):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton

    H = hidden // D
    lens = lengths(kind, S, tokens)
    total = sum(lens)
    q = torch.randn(total, H, D, device="cuda", dtype=dtype)
    k, v = torch.randn_like(q), torch.randn_like(q)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    pairs = sum(n * (n + 1) / 2 if causal else n * n for n in lens)
    flops = 4 * pairs * H * D
    res = {"varlen": t_ms(lambda: aotriton.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens),
                                                                   causal=causal))}
    if kind == "equal":
        B = len(lens)
        qb, kb, vb = (t.view(B, S, H, D) for t in (q, k, v))
        res["batched"] = t_ms(lambda: aotriton.flash_attn_func(qb, kb, vb, causal=causal))
        qt, kt, vt = (t.transpose(1, 2) for t in (qb, kb, vb))
        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                res["cudnn"] = t_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt,
                                                                                              is_causal=causal))
        except RuntimeError:
            res["cudnn"] = float("nan")
    tf = {name: flops / (ms * 1e-3) / 1e12 for name, ms in res.items()}
    nan = float("nan")
    print(f"| {D} | {causal} | {S} | {kind} | {tf['varlen']:.0f} | {tf.get('batched', nan):.0f} | "
          f"{tf.get('cudnn', nan):.0f} | {tf['varlen'] / tf.get('batched', nan):.2f} | "
          f"{tf['varlen'] / tf.get('cudnn', nan):.2f} |", flush=True)
    return {"dtype": dname, "D": D, "causal": causal, "seqlen": S, "lengths": kind, "mode": "fwd",
            "varlen_tflops": tf["varlen"], "batched_tflops": tf.get("batched"), "cudnn_tflops": tf.get("cudnn")}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--dtype", default="bf16", help="comma list of fp16, bf16")
    ap.add_argument("--seqlens", default="512,2048,8192")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--json", default=str(REPO / "bench/results/flash_varlen_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    tokens, hidden = 16384, 2048
    rows = []
    for dname in args.dtype.split(","):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dname]
        print(f"\nGPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
              f"{dname}, ~{tokens} tokens, hidden {hidden}")
        print("| D | causal | seqlen | lengths | varlen TF/s | batched TF/s | cuDNN TF/s | varlen/batched |"
              " varlen/cuDNN |")
        print("|---|---|---|---|---|---|---|---|---|")
        for D in (int(x) for x in args.head_dims.split(",")):
            for S in (int(x) for x in args.seqlens.split(",")):
                for causal in (False, True):
                    for kind in ("equal", "ragged"):
                        rows.append(rows_for(dname, dtype, D, S, causal, kind, tokens, hidden))
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "tokens": tokens, "hidden": hidden, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
