"""Attention features on the GPU, in one run: sliding window against full
causal at the same shape (issue 12: window 4096 at seqlen 16k must be >= 3x
faster), and what softcap / ALiBi cost over plain causal attention.

    python bench/bench_attn_features.py [--prefix install] [--dtype bf16]
                                        [--json bench/results/attn_features_sm90.json]

Shape: batch 1, seqlen 16384, 16 heads (GQA 16:4 for one row), head dim 128,
causal (bottom-right). Times are medians of triton.testing.do_bench; each
row gives forward and forward+backward milliseconds and the speedup (or
slowdown) against the full causal row of the same pass. Rows and metadata
(GPU, versions, commit) go to the JSON file.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from bench_common import commit_id  # noqa: E402
from bench_flash import t_ms  # noqa: E402

ROWS = [  # name, flash_attn_func keywords (alibi: slopes drawn below), kv heads
    ("full causal", {}, 16),
    ("window 4096", {"window_size": (4096, 0)}, 16),
    ("window 1024", {"window_size": (1024, 0)}, 16),
    ("full causal, GQA 16:4", {}, 4),
    ("window 4096, GQA 16:4", {"window_size": (4096, 0)}, 4),
    ("softcap 30", {"softcap": 30.0}, 16),
    ("ALiBi", {"alibi_slopes": True}, 16),
    ("window 4096 + softcap 30", {"window_size": (4096, 0), "softcap": 30.0}, 16),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--dtype", default="bf16", choices=["fp16", "bf16"])
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--json", default=str(REPO / "bench/results/attn_features_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import aotriton
    import torch
    import triton

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    B, S, Hq, D = 1, args.seqlen, 16, 128
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{args.dtype}, B={B} S={S} Hq={Hq} D={D}, causal")
    rows, base = [], {}
    for name, kw, hk in ROWS:
        torch.manual_seed(0)
        q = torch.randn(B, S, Hq, D, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(B, S, hk, D, device="cuda", dtype=dtype, requires_grad=True)
        v = torch.randn(B, S, hk, D, device="cuda", dtype=dtype, requires_grad=True)
        kw = dict(kw)
        if kw.get("alibi_slopes"):
            kw["alibi_slopes"] = torch.exp2(-8.0 * torch.arange(1, Hq + 1, device="cuda") / Hq)
        dout = torch.randn(B, S, Hq, D, device="cuda", dtype=dtype)

        def fwd():
            with torch.no_grad():
                aotriton.flash_attn_func(q, k, v, causal=True, **kw)

        def fwd_bwd():
            out = aotriton.flash_attn_func(q, k, v, causal=True, **kw)
            torch.autograd.grad(out, (q, k, v), dout)

        row = {"name": name, "kv_heads": hk, "window_size": list(kw.get("window_size", (-1, -1))),
               "softcap": kw.get("softcap", 0.0), "alibi": "alibi_slopes" in kw,
               "fwd_ms": t_ms(fwd), "fwd_bwd_ms": t_ms(fwd_bwd)}
        ref = base.setdefault(hk, row) if not kw else base[hk]  # the full causal row of these kv heads
        row["fwd_speedup_vs_full_causal"] = ref["fwd_ms"] / row["fwd_ms"]
        row["fwd_bwd_speedup_vs_full_causal"] = ref["fwd_bwd_ms"] / row["fwd_bwd_ms"]
        rows.append(row)
        print(f"  {name:28s} fwd {row['fwd_ms']:8.3f} ms ({row['fwd_speedup_vs_full_causal']:5.2f}x)   "
              f"fwd+bwd {row['fwd_bwd_ms']:8.3f} ms ({row['fwd_bwd_speedup_vs_full_causal']:5.2f}x)")
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "dtype": args.dtype, "shape": {"batch": B, "seqlen": S, "heads_q": Hq, "head_dim": D},
            "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
