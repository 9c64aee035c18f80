"""Fused MoE on the GPU, in one run: aotriton.fused_experts end to end and its
two grouped GEMMs, against the same Triton kernels launched by the Triton JIT
(tritonsrc/moe/moe_jit.py, same configs) and a plain torch loop over experts.

    python bench/bench_moe.py [--prefix install] [--models mixtral,deepseek] [--tokens 1,8,64,512,4096]

Layers: Mixtral-like (E=8, top-2, hidden 4096, intermediate 14336, bf16) and
DeepSeek-like (E=256, top-8, hidden 7168, intermediate 2048, fp8 w8a8 with
128x128 block scales, bf16 activations; the torch loop runs bf16 weights
dequantized ahead of time). Routing: random distinct experts per token.
Times: medians of triton.testing.do_bench (CUDA events, eager launches);
"graph" columns replay one CUDA graph per call (do_bench_cudagraph, median),
which removes host launch overhead, for tokens <= 64. GEMM TFLOP/s count the
routed slots only: 2 * M * topk * N_out * K_in.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODELS = {
    "mixtral": dict(E=8, topk=2, K=4096, N=14336, quant="none"),
    "deepseek": dict(E=256, topk=8, K=7168, N=2048, quant="fp8_block"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--models", default="mixtral,deepseek")
    ap.add_argument("--tokens", default="1,8,64,512,4096")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch loop baseline")
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton
    from tritonsrc.moe import configs as CFG
    from tritonsrc.moe import moe_jit as mj

    torch.manual_seed(0)
    dev = "cuda"
    FP8 = torch.float8_e4m3fn

    def t_ms(fn):
        fn()
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

    def t_graph_ms(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")

    def quant_block(w):  # [R, C] fp32 -> fp8 [R, C], scales [cdiv(R,128), cdiv(C,128)]
        R, C = w.shape
        pr, pc = (-R) % 128, (-C) % 128
        blk = torch.nn.functional.pad(w, (0, pc, 0, pr)).reshape((R + pr) // 128, 128, (C + pc) // 128, 128)
        s = blk.abs().amax((1, 3)).clamp(min=1e-10) / 448.0
        q = (blk / s[:, None, :, None]).clamp(-448, 448).to(FP8).reshape(R + pr, C + pc)[:R, :C]
        return q, s

    def dequant_block(q, s):
        return (q.float() * s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:q.shape[0], :q.shape[1]])

    def make_weights(E, N, K, quant):
        """w1 [E, 2N, K], w2 [E, K, N] (+ block scales, + bf16 copies for torch), built per expert."""
        if quant == "none":
            w1 = torch.randn(E, 2 * N, K, device=dev, dtype=torch.bfloat16) / K ** 0.5
            w2 = torch.randn(E, K, N, device=dev, dtype=torch.bfloat16) / N ** 0.5
            return w1, w2, None, None, w1, w2
        w1 = torch.empty(E, 2 * N, K, device=dev, dtype=FP8)
        w2 = torch.empty(E, K, N, device=dev, dtype=FP8)
        s1 = torch.empty(E, -(-2 * N // 128), -(-K // 128), device=dev)
        s2 = torch.empty(E, -(-K // 128), -(-N // 128), device=dev)
        d1 = None if args.no_torch else torch.empty(E, 2 * N, K, device=dev, dtype=torch.bfloat16)
        d2 = None if args.no_torch else torch.empty(E, K, N, device=dev, dtype=torch.bfloat16)
        for e in range(E):
            w1[e], s1[e] = quant_block(torch.randn(2 * N, K, device=dev) / K ** 0.5)
            w2[e], s2[e] = quant_block(torch.randn(K, N, device=dev) / N ** 0.5)
            if d1 is not None:
                d1[e], d2[e] = dequant_block(w1[e], s1[e]), dequant_block(w2[e], s2[e])
        return w1, w2, s1, s2, d1, d2

    def torch_moe(x, w1, w2, w, ids):
        """Eager torch: one gather + two matmuls per active expert (host sync for the counts)."""
        M, K = x.shape
        topk = ids.shape[1]
        N = w1.shape[1] // 2
        flat = ids.reshape(-1)
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=w1.shape[0]).tolist()
        out = torch.zeros(M, K, device=x.device, dtype=torch.float32)
        wflat = w.reshape(-1)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            slots = order[start:start + c]
            start += c
            tok = slots // topk
            h = x[tok] @ w1[e].T
            y = (torch.nn.functional.silu(h[:, :N]) * h[:, N:]) @ w2[e].T
            out.index_add_(0, tok, y.float() * wflat[slots, None])
        return out.to(x.dtype)

    def rel(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    def cfg_of(ran, bs):
        cfg = {k: int(v) for k, v in (kv.split("=") for kv in ran.split(","))}
        cfg["BLOCK_SIZE_M"] = bs
        return cfg

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"aotriton {aotriton.version()} (profile {aotriton.build_profile()})")
    print("| layer | M | aot ms | JIT ms | torch ms | aot graph ms | JIT graph ms | aot/JIT | aot/torch | "
          "GEMM1 aot TF/s | GEMM1 JIT TF/s | GEMM2 aot TF/s | GEMM2 JIT TF/s | err vs JIT | err vs torch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        spec = MODELS[name]
        E, topk, K, N, qname = spec["E"], spec["topk"], spec["K"], spec["N"], spec["quant"]
        quant = CFG.QUANT_NONE if qname == "none" else CFG.QUANT_FP8_BLOCK
        w1, w2, s1, s2, d1, d2 = make_weights(E, N, K, qname)
        kw = {} if quant == CFG.QUANT_NONE else dict(use_fp8_w8a8=True, block_shape=[128, 128], w1_scale=s1,
                                                      w2_scale=s2)
        for M in (int(m) for m in args.tokens.split(",")):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            ids = torch.rand(M, E, device=dev).topk(topk, dim=-1).indices.to(torch.int32)
            w = torch.rand(M, topk, device=dev) + 0.1
            w = w / w.sum(-1, keepdim=True)
            out = torch.empty_like(x)
            ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8,
                             device=dev)
            cfg = CFG.gemm_config(M, quant)  # what the AOT operator runs without a tuning database

            def aot_fn():
                return aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws, **kw)

            def jit_fn():
                return mj.fused_experts_jit(x, w1, w2, w, ids, quant=quant, w1_scale=s1, w2_scale=s2, config=cfg)

            res = {"aot": t_ms(aot_fn), "jit": t_ms(jit_fn)}
            err_jit = rel(aot_fn(), jit_fn())
            err_torch = float("nan")
            res["torch"] = float("nan")
            if not args.no_torch:
                res["torch"] = t_ms(lambda: torch_moe(x, d1, d2, w, ids))
                err_torch = rel(aot_fn(), torch_moe(x, d1, d2, w, ids))
            res["aot_g"] = res["jit_g"] = float("nan")
            if M <= 64:
                res["aot_g"] = t_graph_ms(aot_fn)
                res["jit_g"] = t_graph_ms(jit_fn)

            # The two grouped GEMMs alone, on the operator's own intermediate shapes.
            bs = aotriton.moe_gemm_block_size(M)
            s, e, n = aotriton.moe_align_block_size(ids, bs, E)
            slots = M * topk
            c1 = torch.empty(slots, 2 * N, device=dev, dtype=torch.bfloat16)
            c2 = torch.empty(slots, K, device=dev, dtype=torch.bfloat16)
            if quant == CFG.QUANT_NONE:
                a1, a1s = x, None
            else:
                a1, a1s = aotriton.per_token_group_quant_fp8(x)
            ran1 = aotriton.invoke_fused_moe_kernel(a1, w1, c1, None, s, e, n, topk, bs, quant=quant, A_scale=a1s,
                                                    B_scale=s1)
            act = aotriton.silu_and_mul(c1)
            if quant == CFG.QUANT_NONE:
                a2, a2s = act, None
            else:
                a2, a2s = aotriton.per_token_group_quant_fp8(act)
            ran2 = aotriton.invoke_fused_moe_kernel(a2, w2, c2, w, s, e, n, 1, bs, mul_routed_weight=True,
                                                    quant=quant, A_scale=a2s, B_scale=s2)
            g = {
                "g1_aot": t_ms(lambda: aotriton.invoke_fused_moe_kernel(a1, w1, c1, None, s, e, n, topk, bs,
                                                                        quant=quant, A_scale=a1s, B_scale=s1)),
                "g1_jit": t_ms(lambda: mj.invoke_grouped_gemm(a1, w1, c1, None, s, e, n, topk, cfg_of(ran1, bs),
                                                              quant=quant, a_scale=a1s, b_scale=s1)),
                "g2_aot": t_ms(lambda: aotriton.invoke_fused_moe_kernel(a2, w2, c2, w, s, e, n, 1, bs,
                                                                        mul_routed_weight=True, quant=quant,
                                                                        A_scale=a2s, B_scale=s2)),
                "g2_jit": t_ms(lambda: mj.invoke_grouped_gemm(a2, w2, c2, w, s, e, n, 1, cfg_of(ran2, bs),
                                                              mul_routed_weight=True, quant=quant, a_scale=a2s,
                                                              b_scale=s2)),
            }
            f1 = 2 * slots * 2 * N * K
            f2 = 2 * slots * K * N
            tf = {k_: (f1 if k_.startswith("g1") else f2) / (v_ * 1e-3) / 1e12 for k_, v_ in g.items()}
            print(f"| {name} {qname} | {M} | {res['aot']:.3f} | {res['jit']:.3f} | {res['torch']:.3f} | "
                  f"{res['aot_g']:.3f} | {res['jit_g']:.3f} | {res['aot'] / res['jit']:.2f} | "
                  f"{res['aot'] / res['torch']:.2f} | {tf['g1_aot']:.1f} | {tf['g1_jit']:.1f} | {tf['g2_aot']:.1f} | "
                  f"{tf['g2_jit']:.1f} | {err_jit:.1e} | {err_torch:.1e} |", flush=True)
            del x, ids, w, out, ws, s, e, n, c1, c2, a1, a2, act
            torch.cuda.empty_cache()
        del w1, w2, s1, s2, d1, d2
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
