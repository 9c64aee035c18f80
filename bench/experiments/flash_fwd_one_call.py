"""One flash forward between cudaProfilerStart/Stop, for ncu (bench/experiments/ncu_flash_fwd.sh): where
the sm_90 forward loses to SDPA's cuDNN backend at seqlen 2048 (issue 19: head dim 128, 0.94-0.96x on the H100).

    python bench/experiments/flash_fwd_one_call.py --impl aot|jit|cudnn|flash [--D 128] [--seqlen 2048] [--causal]
                                                   [--dtype bf16]

bench_flash.py's shapes (16k tokens, hidden 2048); aot is aotriton.flash_attn_func from the installed build,
jit the sm_90 Gluon kernel (attn_fwd_hopper) through the Triton JIT with the rule's default config (no build).
Each output is checked against SDPA's math backend (float32 inputs) before the profiled call.
"""
import argparse
import sys
from pathlib import Path

from profiled_call import profile_one_call

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # python.jit for --impl jit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["aot", "jit", "cudnn", "flash"], required=True)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    args = ap.parse_args()
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    S, D = args.seqlen, args.D
    B, H = 16384 // S, 2048 // D
    torch.manual_seed(0)
    q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
    k, v = torch.randn_like(q), torch.randn_like(q)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if args.impl == "aot":
        import aotriton
        run = lambda: aotriton.flash_attn_func(q, k, v, causal=args.causal)  # noqa: E731
    elif args.impl == "jit":
        from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit
        run = lambda: attn_fwd_hopper_jit(q, k, v, D ** -0.5, 2 if args.causal else 0)[0]  # noqa: E731
    else:
        backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[args.impl]

        def run():
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal).transpose(1, 2)
    out = run()
    with sdpa_kernel(SDPBackend.MATH):
        ref = torch.nn.functional.scaled_dot_product_attention(qt[:1].float(), kt[:1].float(), vt[:1].float(),
                                                               is_causal=args.causal).transpose(1, 2)
    err = ((out[:1].float() - ref).norm() / ref.norm()).item()
    print(f"{args.impl} D={D} S={S} causal={args.causal} {args.dtype}: rel err {err:.2e} (batch 0)")
    assert err < 1e-2, err
    profile_one_call(run)


if __name__ == "__main__":
    main()
