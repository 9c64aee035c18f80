"""Fused MoE on the GPU, in one run: aotriton.fused_experts end to end, its two
grouped GEMMs alone, torch._grouped_mm (CUTLASS, bf16) on the same routed
rows, and the decode roofline.

    python bench/bench_moe.py [--quick] [--prefix install] [--models mixtral,deepseek]
                              [--tokens 1,8,16,32,64,512,4096] [--routing balanced,random] [--jit]
                              [--json bench/results/moe_sm90.json]

Layers: Mixtral-like (E=8, top-2, hidden K=4096, intermediate N=14336) and
DeepSeek-like (E=256, top-8, K=7168, N=2048); quant bf16, fp8 w8a8 per-tensor
(per-expert weight scales, dynamic activation scales) and fp8 w8a8 with
128x128 block scales. Routing: "balanced" (slot s of the flattened [M, topk]
ids goes to expert s % E: every expert gets M*topk/E slots) or "random"
(distinct random experts per token).

Columns:
  GEMM1/GEMM2 aot TF/s  the operator's grouped GEMMs alone on the Triton kernel fused_moe_gemm
                    (aotriton.invoke_fused_moe_kernel with AOTRITON_MOE_HOPPER=0, the block size and
                    configs fused_experts uses), on its own intermediates.
  hopper opt-in     which GEMM kernel runs (GEMM1/GEMM2) with AOTRITON_MOE_HOPPER=1: "hopper" =
                    the sm_90 Gluon kernels (fused_moe_gemm_hopper, fused_moe_gemm_hopper_fp8),
                    "triton" = fused_moe_gemm. Where hopper ran, the "hopper" TF/s columns time it on
                    the same GEMM (A/B in this run); empty otherwise.
  default           which kernel runs without AOTRITON_MOE_HOPPER (the Gluon kernels where they
                    serve, the Triton kernel otherwise): fused ms times that.
  grouped_mm TF/s   torch._grouped_mm(mat_a [slots, K] sorted by expert, mat_b [E, K, N]
                    = w.transpose(1, 2), offs = int32 cumulative ends), bf16 layers only; the
                    gather into expert order is not timed. TF/s count routed slots only:
                    GEMM1 2*slots*2N*K, GEMM2 2*slots*K*N.
  fused ms          fused_experts, eager launches (do_bench median); graph ms: one CUDA graph
                    replay per call (M <= 64).
  roofline          decode (M <= 64): (bytes of the weights and scales of the experts this
                    routing touches / device copy bandwidth measured in this run, 2 x bytes of a
                    1 GiB device-to-device copy per second) / graph ms. 1.0 = at the roofline.
Results are also written as JSON (rows + GPU, torch/triton/aotriton versions, commit) to
--json and, when $OUT is set, to $OUT/moe_sm90.json. --quick: a subset that runs in
about 2 minutes on an H200.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from bench_common import commit_id, copy_bandwidth, expert_bytes

REPO = Path(__file__).resolve().parent.parent

MODELS = {
    "mixtral": dict(E=8, topk=2, K=4096, N=14336),
    "deepseek": dict(E=256, topk=8, K=7168, N=2048),
}
FULL = {"mixtral": ["bf16", "fp8_tensor", "fp8_block"], "deepseek": ["bf16", "fp8_tensor", "fp8_block"]}
QUICK = [  # (layer, quant, tokens, routings)
    ("mixtral", "bf16", [1, 64, 512, 4096], ["balanced", "random"]),
    ("mixtral", "fp8_tensor", [64, 512, 4096], ["random"]),
    ("mixtral", "fp8_block", [64, 512, 4096], ["random"]),
    ("deepseek", "bf16", [1, 64, 512, 4096], ["balanced", "random"]),
    ("deepseek", "fp8_block", [1, 64, 4096], ["random"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_MOE_QUICK") == "1",
                    help="the subset that runs in about 2 minutes (also BENCH_MOE_QUICK=1)")
    ap.add_argument("--models", default="mixtral,deepseek")
    ap.add_argument("--quants", default="bf16,fp8_tensor,fp8_block")
    ap.add_argument("--tokens", default="1,8,16,32,64,512,4096")
    ap.add_argument("--routing", default="balanced,random")
    ap.add_argument("--jit", action="store_true", help="also time fused_experts through the Triton JIT")
    ap.add_argument("--json", default=str(REPO / "bench/results/moe_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton
    from tritonsrc.moe import configs as CFG

    dev = "cuda"
    FP8 = torch.float8_e4m3fn
    QUANT = {"bf16": CFG.QUANT_NONE, "fp8_tensor": CFG.QUANT_FP8_TENSOR, "fp8_block": CFG.QUANT_FP8_BLOCK}
    warm, rep = (10, 40) if args.quick else (25, 100)
    torch.manual_seed(0)

    def t_ms(fn):
        fn()
        return triton.testing.do_bench(fn, warmup=warm, rep=rep, return_mode="median")

    def t_graph_ms(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median")

    def quant_block(w):  # [R, C] fp32 -> fp8 [R, C], scales [cdiv(R,128), cdiv(C,128)]
        R, C = w.shape
        pr, pc = (-R) % 128, (-C) % 128
        blk = torch.nn.functional.pad(w, (0, pc, 0, pr)).reshape((R + pr) // 128, 128, (C + pc) // 128, 128)
        s = blk.abs().amax((1, 3)).clamp(min=1e-10) / 448.0
        q = (blk / s[:, None, :, None]).clamp(-448, 448).to(FP8).reshape(R + pr, C + pc)[:R, :C]
        return q, s

    def make_weights(E, N, K, quant):
        """w1 [E, 2N, K], w2 [E, K, N] and their scales, built one expert at a time."""
        if quant == "bf16":
            w1 = torch.randn(E, 2 * N, K, device=dev, dtype=torch.bfloat16) / K ** 0.5
            w2 = torch.randn(E, K, N, device=dev, dtype=torch.bfloat16) / N ** 0.5
            return w1, w2, None, None
        w1 = torch.empty(E, 2 * N, K, device=dev, dtype=FP8)
        w2 = torch.empty(E, K, N, device=dev, dtype=FP8)
        if quant == "fp8_block":
            s1 = torch.empty(E, -(-2 * N // 128), -(-K // 128), device=dev)
            s2 = torch.empty(E, -(-K // 128), -(-N // 128), device=dev)
        else:
            s1, s2 = torch.empty(E, device=dev), torch.empty(E, device=dev)
        for e in range(E):
            for w, s, shape, fan_in in ((w1, s1, (2 * N, K), K), (w2, s2, (K, N), N)):
                full = torch.randn(*shape, device=dev) / fan_in ** 0.5
                if quant == "fp8_block":
                    w[e], s[e] = quant_block(full)
                else:
                    s[e] = full.abs().max() / 448.0
                    w[e] = (full / s[e]).to(FP8)
        return w1, w2, s1, s2

    def routing(M, E, topk, kind):
        if kind == "balanced":
            ids = (torch.arange(M * topk, device=dev) % E).reshape(M, topk)
        else:
            ids = torch.rand(M, E, device=dev).topk(topk, dim=-1).indices
        w = torch.rand(M, topk, device=dev) + 0.1
        return w / w.sum(-1, keepdim=True), ids.to(torch.int32).contiguous()

    def grouped_mm_ms(x, act, w1, w2, ids, topk):
        """torch._grouped_mm on the same routed rows (pre-sorted by expert), GEMM1 and GEMM2."""
        if not hasattr(torch, "_grouped_mm"):
            return float("nan"), float("nan")
        flat = ids.reshape(-1).long()
        order = flat.argsort(stable=True)
        offs = torch.bincount(flat, minlength=w1.shape[0]).cumsum(0).to(torch.int32)
        a1 = x[order // topk].contiguous()
        a2 = act[order].contiguous()
        b1, b2 = w1.transpose(1, 2), w2.transpose(1, 2)
        try:
            return (t_ms(lambda: torch._grouped_mm(a1, b1, offs=offs)),
                    t_ms(lambda: torch._grouped_mm(a2, b2, offs=offs)))
        except RuntimeError as e:
            print(f"  torch._grouped_mm failed: {e}".splitlines()[0], flush=True)
            return float("nan"), float("nan")

    def touched_bytes(ids, w1, w2, s1, s2):
        return torch.unique(ids).numel() * expert_bytes(w1, w2, s1, s2)

    gpu = torch.cuda.get_device_name()
    bw = copy_bandwidth(dev)
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "aotriton": aotriton.version(),
            "profile": aotriton.build_profile(), "commit": commit_id(), "copy_bandwidth_GBps": round(bw / 1e9, 1),
            "quick": args.quick}
    print(f"GPU {gpu}, torch {meta['torch']}, triton {meta['triton']}, aotriton {meta['aotriton']} "
          f"(profile {meta['profile']}, commit {meta['commit']}); device copy bandwidth {bw / 1e9:.0f} GB/s")
    cols = ["layer", "quant", "M", "routing", "hopper opt-in", "default", "GEMM1 aot TF/s", "GEMM1 hopper TF/s",
            "GEMM1 grouped_mm TF/s", "GEMM2 aot TF/s", "GEMM2 hopper TF/s", "GEMM2 grouped_mm TF/s", "fused ms", "graph ms", "roofline"] + (["JIT ms"] if args.jit else [])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)

    if args.quick:
        plan = [p for p in QUICK if p[0] in args.models.split(",")]
    else:
        plan = [(m, q, [int(t) for t in args.tokens.split(",")], args.routing.split(","))
                for m in args.models.split(",") for q in FULL[m] if q in args.quants.split(",")]
    rows = []
    weights = {}
    for layer, qname, tokens, routings in plan:
        spec = MODELS[layer]
        E, topk, K, N = spec["E"], spec["topk"], spec["K"], spec["N"]
        quant = QUANT[qname]
        if (layer, qname) not in weights:
            weights.clear()
            torch.cuda.empty_cache()
            weights[(layer, qname)] = make_weights(E, N, K, qname)
        w1, w2, s1, s2 = weights[(layer, qname)]
        kw = {}
        if quant != CFG.QUANT_NONE:
            kw = dict(use_fp8_w8a8=True, w1_scale=s1, w2_scale=s2)
            if quant == CFG.QUANT_FP8_BLOCK:
                kw["block_shape"] = [128, 128]
        for M in tokens:
            for kind in routings:
                x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
                w, ids = routing(M, E, topk, kind)
                out = torch.empty_like(x)
                ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8,
                                 device=dev)

                def fused():
                    return aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws, **kw)

                r = {"layer": layer, "quant": qname, "M": M, "routing": kind, "fused_ms": t_ms(fused)}
                r["graph_ms"] = t_graph_ms(fused) if M <= 64 else float("nan")
                r["roofline"] = (touched_bytes(ids, w1, w2, s1, s2) / bw * 1e3 / r["graph_ms"]) if M <= 64 \
                    else float("nan")
                if args.jit:
                    from python.jit import moe as mj
                    cfg = CFG.gemm_config(M, quant)
                    r["jit_ms"] = t_ms(lambda: mj.fused_experts_jit(x, w1, w2, w, ids, quant=quant, w1_scale=s1,
                                                                    w2_scale=s2, config=cfg))

                # The two grouped GEMMs alone, on the operator's own intermediate shapes.
                bs = aotriton.moe_gemm_block_size(M, topk=topk, num_experts=E)
                s, e, n = aotriton.moe_align_block_size(ids, bs, E)
                slots = M * topk
                c1 = torch.empty(slots, 2 * N, device=dev, dtype=torch.bfloat16)
                c2 = torch.empty(slots, K, device=dev, dtype=torch.bfloat16)
                if quant == CFG.QUANT_NONE:
                    a1, a1s = x, None
                elif quant == CFG.QUANT_FP8_TENSOR:
                    a1, a1s = aotriton.per_tensor_quant_fp8(x)
                else:
                    a1, a1s = aotriton.per_token_group_quant_fp8(x)
                aotriton.invoke_fused_moe_kernel(a1, w1, c1, None, s, e, n, topk, bs, quant=quant, A_scale=a1s,
                                                 B_scale=s1)
                act = aotriton.silu_and_mul(c1)
                if quant == CFG.QUANT_NONE:
                    a2, a2s = act, None
                elif quant == CFG.QUANT_FP8_TENSOR:
                    a2, a2s = aotriton.per_tensor_quant_fp8(act)
                else:
                    a2, a2s = aotriton.per_token_group_quant_fp8(act)
                def gemm1():
                    return aotriton.invoke_fused_moe_kernel(a1, w1, c1, None, s, e, n, topk, bs, quant=quant,
                                                            A_scale=a1s, B_scale=s1)

                def gemm2():
                    return aotriton.invoke_fused_moe_kernel(a2, w2, c2, w, s, e, n, 1, bs, mul_routed_weight=True,
                                                            quant=quant, A_scale=a2s, B_scale=s2)

                ran = lambda g: "hopper" if "NUM_STAGES=" in (g() or "") else "triton"  # noqa: E731
                default = [ran(g) for g in (gemm1, gemm2)]
                t1 = t2 = float("nan")
                # A/B on the same GEMMs (AOTRITON_MOE_HOPPER is read per call): the Triton kernel
                # alone (=0), then the sm_90 Gluon kernels where they serve (=1).
                try:
                    os.environ["AOTRITON_MOE_HOPPER"] = "0"
                    g1, g2 = t_ms(gemm1), t_ms(gemm2)
                    os.environ["AOTRITON_MOE_HOPPER"] = "1"
                    kernels = [ran(g) for g in (gemm1, gemm2)]
                    t1 = t_ms(gemm1) if kernels[0] == "hopper" else t1
                    t2 = t_ms(gemm2) if kernels[1] == "hopper" else t2
                finally:
                    del os.environ["AOTRITON_MOE_HOPPER"]
                gm1, gm2 = grouped_mm_ms(x, act, w1, w2, ids, topk) if quant == CFG.QUANT_NONE else (
                    float("nan"), float("nan"))
                f1, f2 = 2 * slots * 2 * N * K, 2 * slots * K * N
                tf = lambda f, ms: f / (ms * 1e-3) / 1e12  # noqa: E731
                r.update(gemm1_aot_tflops=tf(f1, g1), gemm1_grouped_mm_tflops=tf(f1, gm1),
                         gemm2_aot_tflops=tf(f2, g2), gemm2_grouped_mm_tflops=tf(f2, gm2), block_size=bs,
                         gemm1_hopper_optin=kernels[0], gemm2_hopper_optin=kernels[1],
                         gemm1_default=default[0], gemm2_default=default[1],
                         gemm1_hopper_tflops=tf(f1, t1), gemm2_hopper_tflops=tf(f2, t2))
                rows.append({k_: (round(v_, 4) if isinstance(v_, float) else v_) for k_, v_ in r.items()})
                vals = [layer, qname, M, kind, "/".join(kernels), "/".join(default), f"{r['gemm1_aot_tflops']:.1f}",
                        f"{r['gemm1_hopper_tflops']:.1f}", f"{r['gemm1_grouped_mm_tflops']:.1f}",
                        f"{r['gemm2_aot_tflops']:.1f}", f"{r['gemm2_hopper_tflops']:.1f}",
                        f"{r['gemm2_grouped_mm_tflops']:.1f}",
                        f"{r['fused_ms']:.3f}", f"{r['graph_ms']:.3f}", f"{r['roofline']:.2f}"]
                if args.jit:
                    vals.append(f"{r['jit_ms']:.3f}")
                print("| " + " | ".join(str(v) for v in vals) + " |", flush=True)
                del x, w, ids, out, ws, s, e, n, c1, c2, a1, a2, act
    result = {**meta, "rows": rows}
    text = json.dumps(result, indent=1, sort_keys=True, default=lambda v: None) + "\n"
    text = text.replace("NaN", "null")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(text)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "moe_sm90.json").write_text(text)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
