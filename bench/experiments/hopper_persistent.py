"""The persistent sm_90 ping-pong forward (tritonsrc/flash/fwd_hopper_persistent.py)
against the shipped kernel (fwd_hopper.py, the same config through its JIT
launcher) and SDPA's cuDNN backend: every case checked against a float64
reference first, then timed at 16k tokens, hidden 2048 (bench_flash.py's shapes).
    python bench/experiments/hopper_persistent.py [--json out.json]   (sm_90 GPU)
    python bench/experiments/hopper_persistent.py --compile           (CPU: registers, spills)"""
import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test" / "gpu"), str(REPO / "bench")]

CONFIGS = {128: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3},
           96: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3},
           64: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3}}
SHIPPED = {"SCHEDULE": 3, "num_warps": 4, "maxnreg": 0}  # the ping-pong config it is compared with


def launch(q, k, v, sm_scale, causal_type, config, num_sms):
    import torch
    from python.rules_flash_hopper import attn_fwd_hopper as rule
    from python.jit.flash_fwd_hopper import _descriptor as _view
    from tritonsrc.flash.fwd_hopper_persistent import attn_fwd_hopper_persistent
    from python.kernel_rules import TmaArg

    B, Sq, Hq, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    functional = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[q.dtype], "BLOCK_DMODEL": D,
                  "CAUSAL_TYPE": causal_type}
    cfg = {**config, **SHIPPED}
    descs = {a.name: a for a in rule.args if isinstance(a, TmaArg)}
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32)
    tiles = -(-Sq // config["BLOCK_M"]) * B * Hq
    attn_fwd_hopper_persistent[(min(tiles, num_sms), )](
        *(_view(descs[n], t, functional, cfg) for n, t in (("q_desc", q), ("k_desc", k), ("v_desc", v))),
        out, lse, sm_scale, out.stride(0), out.stride(2), out.stride(1), lse.stride(0), lse.stride(1),
        Hq, Hk, Sq, Sk, B * Hq,
        BLOCK_DMODEL=D, CAUSAL_TYPE=causal_type, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        NUM_STAGES=config["NUM_STAGES"], num_warps=4)
    return out, lse


def compile_only():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from python.cubin_resources import resources
    from python.rules_flash_hopper import attn_fwd_hopper as rule
    from tritonsrc.flash.fwd_hopper_persistent import attn_fwd_hopper_persistent as fn
    from python.kernel_rules import TmaArg

    descs = {a.name: a for a in rule.args if isinstance(a, TmaArg)}
    for D, causal in ((128, 0), (128, 2), (64, 0), (96, 0)):
        f = {"dtype": "bf16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal}
        cfg = {**CONFIGS[D], **SHIPPED}
        const = {**f, **CONFIGS[D]}
        sig = {}
        for name in fn.arg_names:
            if name in ("BLOCK_DMODEL", "CAUSAL_TYPE", "BLOCK_M", "BLOCK_N", "NUM_STAGES"):
                sig[name] = "constexpr"
            elif name in descs:
                sig[name] = descs[name].triton_type(f, cfg)
            elif name == "O":
                sig[name] = "*bf16"
            elif name == "LSE":
                sig[name] = "*fp32"
            elif name == "sm_scale":
                sig[name] = "fp32"
            else:
                sig[name] = "i32"
        src = GluonASTSource(fn=fn, signature=sig, attrs={},
                             constexprs={k: const[k] for k in ("BLOCK_DMODEL", "CAUSAL_TYPE", "BLOCK_M", "BLOCK_N",
                                                               "NUM_STAGES")})
        c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
        print(D, causal, "shared", c.metadata.shared, resources(c.asm["cubin"]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default="bench/results/flash_hopper_persistent_sm90.json")
    args = ap.parse_args()
    if args.compile:
        return compile_only()
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from bench_common import commit_id
    from flash_reference import FWD_TOL, LSE_TOL, attention_ref, rel_err
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_jit

    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    failures = 0
    for D in (128, 64, 96):
        for dtype in (torch.float16, torch.bfloat16):
            for causal, (B, Sq, Sk, Hq, Hk) in ((0, (2, 333, 333, 4, 2)), (1, (1, 1000, 130, 4, 2)),
                                               (2, (2, 130, 1000, 6, 2)), (2, (1, 257, 1, 2, 2)),
                                               (1, (3, 700, 700, 5, 5)), (0, (1, 1, 77, 2, 1))):
                if D == 64 and causal:
                    continue
                g = torch.Generator(device="cuda").manual_seed(D + causal + Sq)
                q = torch.randn(B, Sq, Hq, D, device="cuda", dtype=dtype, generator=g)
                k = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                v = torch.randn(B, Sk, Hk, D, device="cuda", dtype=dtype, generator=g)
                # Few SMs too: every CTA walks several tiles of different lengths.
                for sms in (num_sms, 3):
                    out, lse = launch(q, k, v, 1 / math.sqrt(D), causal, CONFIGS[D], sms)
                    ref, ref_lse = attention_ref(q, k, v, 1 / math.sqrt(D), causal)
                    fin = torch.isfinite(ref_lse)
                    err = rel_err(out, ref)
                    lerr = ((lse.double() - ref_lse)[fin].abs() / ref_lse[fin].abs().clamp_min(1)).max().item() \
                        if fin.any() else 0.0
                    ok = err < FWD_TOL[dtype] and lerr < LSE_TOL[dtype] and torch.equal(torch.isfinite(lse), fin)
                    if not ok:
                        failures += 1
                        print(f"FAIL D={D} {dtype} causal {causal} {(B, Sq, Sk, Hq, Hk)} sms {sms}: "
                              f"rel err {err:.3g}, lse err {lerr:.3g}", flush=True)
    print(f"check: {failures} failures", flush=True)
    rows = []
    t = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
    print("| dtype | D | causal | seqlen | persistent TF/s | shipped ping-pong TF/s | cuDNN TF/s | pers/shipped | pers/cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float16):
        for D in (128, 64):
            for S in (512, 2048, 8192):
                for causal in ((0, 2) if D == 128 else (0, )):
                    B, H = 16384 // S, 2048 // D
                    q = torch.randn(B, S, H, D, device="cuda", dtype=dtype)
                    k, v = torch.randn_like(q), torch.randn_like(q)
                    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
                    flops = 4 * B * H * S * S * D / (2 if causal else 1)
                    res = {"pers": t(lambda: launch(q, k, v, D ** -0.5, causal, CONFIGS[D], num_sms)),
                           "shipped": t(lambda: attn_fwd_hopper_jit(q, k, v, D ** -0.5, causal,
                                                                    {**CONFIGS[D], **SHIPPED}))}
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        res["cudnn"] = t(lambda: torch.nn.functional.scaled_dot_product_attention(
                            qt, kt, vt, is_causal=bool(causal)))
                    tf = {n: flops / (ms * 1e-3) / 1e12 for n, ms in res.items()}
                    print(f"| {str(dtype)[6:]} | {D} | {causal} | {S} | {tf['pers']:.0f} | {tf['shipped']:.0f} | "
                          f"{tf['cudnn']:.0f} | {tf['pers'] / tf['shipped']:.2f} | {tf['pers'] / tf['cudnn']:.2f} |",
                          flush=True)
                    rows.append({"dtype": str(dtype)[6:], "D": D, "causal": causal, "seqlen": S,
                                 "persistent_tflops": tf["pers"], "shipped_pingpong_tflops": tf["shipped"],
                                 "cudnn_tflops": tf["cudnn"]})
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": commit_id(short=False), "check_failures": failures, "rows": rows}
    Path(args.json).write_text(json.dumps(meta, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
