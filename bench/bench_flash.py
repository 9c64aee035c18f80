"""Flash attention forward throughput on the GPU, in one run: aotriton (AOT),
the same Triton kernel through the Triton JIT, and torch SDPA's flash and
cuDNN backends. Shapes: batch * seqlen = 16k tokens, hidden 2048.

    python bench/bench_flash.py [--prefix install] [--dtype fp16] [--quick]

Times are medians of triton.testing.do_bench (CUDA events); TFLOP/s count
4 * B * H * Sq * Sk * D (halved for causal).
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton
    from tritonsrc.flash.fwd_configs import pick_config
    from tritonsrc.flash.fwd_jit import attn_fwd_jit

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    tokens, hidden = 16384, 2048
    seqlens = [1024, 4096, 16384] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{args.dtype}, batch*seqlen={tokens}, hidden={hidden}")
    print("| D | causal | seqlen | aotriton TF/s | JIT TF/s | SDPA flash TF/s | SDPA cuDNN TF/s | aot/flash | aot/cuDNN |"
          " aot/JIT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for D in (64, 128):
        H = hidden // D
        for causal in (False, True):
            for S in seqlens:
                B = tokens // S
                q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
                k, v = torch.randn_like(q), torch.randn_like(q)
                qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
                flops = 4 * B * H * S * S * D / (2 if causal else 1)
                scale = D ** -0.5
                out, _, _ = aotriton.flash_attn_func(q, k, v, causal=causal, return_lse=True)
                cfg = pick_config(90, D, args.dtype)  # the AOT default: the JIT runs the same config
                ref = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)
                err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                assert err < 2e-2, f"aotriton differs from SDPA: {err}"

                def t_ms(fn):
                    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

                res = {"aot": t_ms(lambda: aotriton.flash_attn_func(q, k, v, causal=causal))}
                res["jit"] = t_ms(lambda: attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=2 if causal else 0,
                                                       config=cfg))
                for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel(be):
                            res[name] = t_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
                                qt, kt, vt, is_causal=causal))
                    except RuntimeError:
                        res[name] = float("nan")
                tf = {k_: flops / (v_ * 1e-3) / 1e12 for k_, v_ in res.items()}
                print(f"| {D} | {causal} | {S} | {tf['aot']:.0f} | {tf['jit']:.0f} | {tf['flash']:.0f} | "
                      f"{tf['cudnn']:.0f} | {tf['aot'] / tf['flash']:.2f} | {tf['aot'] / tf['cudnn']:.2f} | "
                      f"{tf['aot'] / tf['jit']:.2f} |", flush=True)
                del q, k, v, qt, kt, vt, out, ref


if __name__ == "__main__":
    main()
