"""attn_fwd_hopper_varlen through its JIT launcher, with no AOT build (a short device call): every sequence of
test_flash_hopper_varlen_gpu's length sets against its float64 reference (NaN-poisoned outputs, the rule's
default config), a neighbour's NaN/inf rows left out, and then the time against the Triton varlen kernel's JIT
(python/jit/flash_fwd.attn_fwd_jit, the route it replaces) on equal-length packed batches of 16k tokens,
hidden 2048, CUDA-graph timed (tune_shared.kernel_ms).

    python bench/experiments/flash_varlen_jit.py [--dtypes fp16,bf16] [--head-dims 64,128] [--seqlens 1024,2048,8192]
"""
import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test"), str(REPO / "test/gpu")]


def check(D, dtype, causal):
    """Every length set of the GPU test, each sequence through its matches_reference (asserts)."""
    from test_flash_hopper_varlen_gpu import CASES, case_inputs, matches_reference, run_jit
    for i in range(len(CASES)):
        lens_q, lens_k, q, k, v = case_inputs(i, causal, D, dtype)
        out, lse = run_jit(q, k, v, lens_q, lens_k, causal, None)  # the rule's default config
        matches_reference(q, k, v, lens_q, lens_k, causal, out, lse)


def neighbours(D):
    """Sequence 1's K NaN and V inf: sequences 0 and 2 unchanged bitwise (the GPU test's check, default config)."""
    from test_flash_hopper_varlen_gpu import neighbours_stay_out, run_jit
    neighbours_stay_out(D, lambda q, k, v, lens_q, lens_k: run_jit(q, k, v, lens_q, lens_k, 0, None))


def timing(dname, dtype, D, S, causal):
    import torch

    from python.jit.flash_fwd import attn_fwd_jit
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_varlen_jit
    from python.tune_shared import kernel_ms
    tokens, H = 16384, 2048 // D
    B = tokens // S
    q, k, v = (torch.randn(tokens, H, D, device="cuda", dtype=dtype) for _ in range(3))
    cu_s = torch.arange(0, (B + 1) * S, S, device="cuda", dtype=torch.int32)
    scale = 1 / math.sqrt(D)
    gluon_ms = kernel_ms(lambda: attn_fwd_hopper_varlen_jit(q, k, v, cu_s, cu_s, S, S, scale, causal))
    triton_ms = kernel_ms(lambda: attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=causal, cu_seqlens_q=cu_s,
                                               cu_seqlens_k=cu_s, max_seqlen_q=S, max_seqlen_k=S))
    flops = 4 * B * H * D * S * (S * (S + 1) / 2 / S if causal else S)
    tf = lambda ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
    print(f"| {dname} | {D} | {causal} | {S} | {tf(gluon_ms):.0f} | {tf(triton_ms):.0f} | "
          f"{triton_ms / gluon_ms:.2f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--head-dims", default="64", help="the rule builds 64; 128 runs (the default config's "
                    "128-register cap spills there: pass a config without it)")
    ap.add_argument("--seqlens", default="1024,2048,8192")
    args = ap.parse_args()
    import torch
    import triton
    names = {"fp16": torch.float16, "bf16": torch.bfloat16}
    dims = [int(x) for x in args.head_dims.split(",")]
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    for D in dims:
        for dname in args.dtypes.split(","):
            for causal in (0, 1, 2):
                check(D, names[dname], causal)
                print(f"check D={D} {dname} causal={causal}: ok", flush=True)
        neighbours(D)
        print(f"neighbours D={D}: ok", flush=True)
    print("| dtype | D | causal | seqlen | Gluon varlen TF/s | Triton varlen TF/s | speedup |\n|---|---|---|---|---|---|---|")
    for dname in args.dtypes.split(","):
        for D in dims:
            for causal in (2, 0):
                for S in (int(x) for x in args.seqlens.split(",")):
                    timing(dname, names[dname], D, S, causal)


if __name__ == "__main__":
    main()
