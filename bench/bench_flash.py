"""Flash attention forward throughput on the GPU, in one run: aotriton (AOT),
the same Triton kernel through the Triton JIT, and torch SDPA's flash and
cuDNN backends. Shapes: batch * seqlen = 16k tokens, hidden 2048.

    python bench/bench_flash.py [--prefix install] [--dtype fp16,bf16] [--quick]
                                [--head-dims 64,128] [--extra-head-dims 96,192,256]
                                [--json bench/results/flash_sm90.json]

Times are medians of triton.testing.do_bench (CUDA events); TFLOP/s count
4 * B * H * Sq * Sk * D (halved for causal); forward+backward counts 3.5x and
backward alone 2.5x the forward FLOPs. Backward alone is (forward+backward) -
forward on every side (the autograd path, each side's .grad reset before the call,
no accumulation kernel); the direct flash_attn_backward call and the
deterministic one are reported beside it. Every row also goes to the JSON file
(GPU name, torch/triton versions and the commit from AOTRITON_COMMIT or git).
"""
import argparse
import json
import sys
from pathlib import Path

from bench_common import commit_id

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--dtype", default="fp16,bf16", help="comma list of fp16, bf16")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--mode", default="all", choices=["fwd", "bwd", "all"])
    ap.add_argument("--seqlens", default=None, help="comma list (default 512..16384)")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--extra-head-dims", default="96,192,256",
                    help="forward-only rows at seqlen 2048 and 8192 ('' for none)")
    ap.add_argument("--json", default=str(REPO / "bench/results/flash_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    tokens, hidden = 16384, 2048
    seqlens = [1024, 4096, 16384] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    if args.seqlens:
        seqlens = [int(x) for x in args.seqlens.split(",")]
    head_dims = [int(x) for x in args.head_dims.split(",")]
    extra = [int(x) for x in args.extra_head_dims.split(",") if x]
    rows = []
    for dname in args.dtype.split(","):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dname]
        print(f"\nGPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
              f"{dname}, batch*seqlen={tokens}, hidden={hidden}")
        if args.mode in ("fwd", "all"):
            rows += fwd_table(dname, dtype, tokens, hidden, [(D, S) for D in head_dims for S in seqlens]
                              + [(D, S) for D in extra for S in (2048, 8192)])
        if args.mode in ("bwd", "all"):
            rows += bwd_table(dname, dtype, tokens, hidden, [(D, S) for D in head_dims for S in seqlens])
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "tokens": tokens, "hidden": hidden, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.json}")


def t_ms(fn):
    import triton
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def bwd_table(dname, dtype, tokens, hidden, shapes):
    """fwd+bwd (3.5x the forward FLOPs) and bwd alone (2.5x)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton

    print("\nforward + backward (TF/s counting 3.5x the forward FLOPs; bwd alone 2.5x)")
    print("| D | causal | seqlen | aot fwd+bwd | SDPA flash fwd+bwd | SDPA cuDNN fwd+bwd | aot bwd | aot bwd direct |"
          " aot bwd det. | flash bwd | cuDNN bwd | aot/flash (f+b) | aot/cuDNN (f+b) | aot/cuDNN (bwd) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for D, S in shapes:
        H = hidden // D
        for causal in (False, True):
            B = tokens // S
            q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            dout = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
            fl = 4 * B * H * S * S * D / (2 if causal else 1)

            # .grad is reset first on both sides: the timed call is the attention forward and
            # backward, not a gradient accumulation kernel (140 us of adds at 16k tokens).
            def aot_fb():
                q.grad = k.grad = v.grad = None
                aotriton.flash_attn_func(q, k, v, causal=causal).backward(dout)

            qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
            doutt = dout.transpose(1, 2)

            def sdpa_fb():
                qt.grad = kt.grad = vt.grad = None
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(doutt)

            res = {"aot_fb": t_ms(aot_fb)}
            with torch.no_grad():
                res["aot_f"] = t_ms(lambda: aotriton.flash_attn_func(q, k, v, causal=causal))
                out, lse, _ = aotriton.flash_attn_func(q, k, v, causal=causal, return_lse=True)
            # The direct backward call (preprocess, dK/dV + dQ, dQ conversion) as a user of
            # flash_attn_backward sees it; the ratios use f+b minus f on every side alike.
            res["aot_b_direct"] = t_ms(lambda: aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=causal))
            # deterministic=True: no dQ atomics (the default sums dQ with them on sm_90)
            res["aot_b_det"] = t_ms(lambda: aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=causal,
                                                                         deterministic=True))
            for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel(be):
                        res[name + "_fb"] = t_ms(sdpa_fb)
                        with torch.no_grad():
                            res[name + "_f"] = t_ms(lambda: torch.nn.functional.scaled_dot_product_attention(
                                qt, kt, vt, is_causal=causal))
                except RuntimeError:
                    res[name + "_fb"] = res[name + "_f"] = float("nan")
            res["flash_b"] = res["flash_fb"] - res["flash_f"]
            res["aot_b"] = res["aot_fb"] - res["aot_f"]
            tf = lambda ms, mult: mult * fl / (ms * 1e-3) / 1e12  # noqa: E731
            a, f, c = tf(res["aot_fb"], 3.5), tf(res["flash_fb"], 3.5), tf(res["cudnn_fb"], 3.5)
            cudnn_b = tf(res["cudnn_fb"] - res["cudnn_f"], 2.5)
            aot_b = tf(res["aot_b"], 2.5)
            print(f"| {D} | {causal} | {S} | {a:.0f} | {f:.0f} | {c:.0f} | {aot_b:.0f} | "
                  f"{tf(res['aot_b_direct'], 2.5):.0f} | {tf(res['aot_b_det'], 2.5):.0f} | "
                  f"{tf(res['flash_b'], 2.5):.0f} | {cudnn_b:.0f} | {a / f:.2f} | {a / c:.2f} | {aot_b / cudnn_b:.2f} |",
                  flush=True)
            base = {"dtype": dname, "D": D, "causal": causal, "seqlen": S}
            rows.append({**base, "mode": "fwd_bwd", "aot_tflops": a, "flash_tflops": f, "cudnn_tflops": c})
            rows.append({**base, "mode": "bwd", "aot_tflops": aot_b,
                         "aot_deterministic_tflops": tf(res["aot_b_det"], 2.5),
                         "aot_direct_call_tflops": tf(res["aot_b_direct"], 2.5),
                         "flash_tflops": tf(res["flash_b"], 2.5), "cudnn_tflops": cudnn_b})
            del q, k, v, qt, kt, vt, dout, doutt, out, lse
    return rows


def fwd_table(dname, dtype, tokens, hidden, shapes):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton
    from tritonsrc.flash.fwd_configs import pick_config
    from python.jit.flash_fwd import attn_fwd_jit

    print("| D | causal | seqlen | aotriton TF/s | JIT TF/s | SDPA flash TF/s | SDPA cuDNN TF/s | aot/flash | aot/cuDNN |"
          " aot/JIT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for D, S in shapes:
        H = hidden // D
        for causal in (False, True):
            B = tokens // S
            q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
            k, v = torch.randn_like(q), torch.randn_like(q)
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            flops = 4 * B * H * S * S * D / (2 if causal else 1)
            scale = D ** -0.5
            out, _, _ = aotriton.flash_attn_func(q, k, v, causal=causal, return_lse=True)
            cfg = pick_config(90, D, dname)  # the AOT default: the JIT runs the same config
            ref = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            assert err < 2e-2, f"aotriton differs from SDPA: {err}"

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
            rows.append({"dtype": dname, "D": D, "causal": causal, "seqlen": S, "mode": "fwd",
                         "aot_tflops": tf["aot"], "flash_tflops": tf["flash"], "cudnn_tflops": tf["cudnn"],
                         "jit_default_tflops": tf["jit"]})
            del q, k, v, qt, kt, vt, out, ref
    return rows


if __name__ == "__main__":
    main()
