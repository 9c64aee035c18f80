"""Where aotriton's forward+backward (autograd) loses to cuDNN's (issue 19).

bench_flash (781de67) has bf16 D 128 causal 2048 at 0.94x cuDNN forward and
0.98x backward (our backward timed alone), but 0.87x for forward+backward
through autograd: the sum of our parts predicts ~0.97. This prints, per shape,
each side's per-call wall time (do_bench median) and the device time of every
kernel the autograd call launches (torch.profiler/CUPTI, medians), including
the gradient accumulation into the leaves' .grad both sides pay.

    python3 bench/experiments/flash_fb_breakdown.py [--shapes 128:2048:1,128:8192:1,64:2048:0]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_breakdown import kernel_times_us  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--shapes", default="128:2048:1,128:8192:1,64:2048:0", help="D:seqlen:causal, comma separated")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=2048)
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python")]
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton

    dtype = torch.bfloat16
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    for shape in args.shapes.split(","):
        D, S, causal = (int(x) for x in shape.split(":"))
        causal = bool(causal)
        H, B = args.hidden // D, args.tokens // S
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        dout = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
        qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
        doutt = dout.transpose(1, 2)

        def aot_fb():
            aotriton.flash_attn_func(q, k, v, causal=causal).backward(dout)

        def aot_f():
            with torch.no_grad():
                aotriton.flash_attn_func(q, k, v, causal=causal)

        def cudnn_fb():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(doutt)

        def cudnn_f():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

        print(f"\nD {D}, seqlen {S}, causal {causal}, batch {B}, heads {H}")
        for name, fn in (("aot fwd+bwd", aot_fb), ("cuDNN fwd+bwd", cudnn_fb), ("aot fwd", aot_f),
                         ("cuDNN fwd", cudnn_f)):
            wall = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
            kernels, launches = kernel_times_us(fn, reps=20)
            dev_sum = sum(kernels.values())
            print(f"{name}: wall {wall:.1f} us/call, {launches:.1f} launches, device sum {dev_sum:.1f} us")
            for kname, us in sorted(kernels.items(), key=lambda x: -x[1]):
                print(f"    {us:9.1f}  {kname[:100]}")
        del q, k, v, qt, kt, vt, dout, doutt


if __name__ == "__main__":
    main()
