"""Programmatic dependent launch on or off, in one run: the decode chains it is for.

    python bench/bench_pdl.py [--prefix install] [--json bench/results/pdl_sm90.json]

Each case runs as one CUDA graph (do_bench_cudagraph median), captured once with
aotriton.set_programmatic_dependent_launch(False) and once with True; the two
outputs must be bitwise equal (the same kernels in the same order: only when a
kernel may start differs). Cases:
  fused_experts at M = 1, 8, 64 (random routing), Mixtral-like (E 8, top-2,
      K 4096, N 14336) and DeepSeek-like (E 256, top-8, K 7168, N 2048), bf16 and
      fp8 w8a8 per tensor with dynamic activation scales (bench_moe.py's layers);
  flash_attn_with_kvcache, one query token, 32 q / 4 kv heads, D 128, bf16,
      page 64, B = 1 and 8 at 8k and 32k keys (bench_decode.py's shape), alone and with
      the step's token appended (kv_append first).
Columns: off ms, on ms, saved us, and the fraction of the HBM roofline (bytes the
call must read over the device copy bandwidth measured in this run) for both.
Results go to --json (and $OUT/pdl_sm90.json when $OUT is set).

Which early start costs or saves: --exclude act_and_mul (AOTRITON_PDL_EXCLUDE: those kernels, by
rule name, launch plainly with PDL on) in a second run against the first, e.g. for the Mixtral
bf16 M=64 row that lost 15% with PDL on (twenty-third session):
    python bench/bench_pdl.py --layers mixtral --quants bf16 --tokens 64 --no-decode
        --exclude act_and_mul --json /tmp/pdl_no_act.json   (one command line)
"""
import argparse
import os
import sys
from pathlib import Path

from bench_common import commit_id, expert_bytes, random_weights, write_results

REPO = Path(__file__).resolve().parent.parent
MOE = {"mixtral": dict(E=8, topk=2, K=4096, N=14336), "deepseek": dict(E=256, topk=8, K=7168, N=2048)}
HQ, HK, D, PAGE = 32, 4, 128, 64


def moe_weights(torch, layer, quant):
    """(w1, w2, fused_experts' quantization kwargs) of a MOE layer: bf16, fp8 per tensor (fp8_tensor) or
    with 128x128 block scales (fp8_block), or (mixtral only) int4 w4a16 with group-128 scales and zero
    points (int4_zp: bench_moe_coverage's layer)."""
    d = MOE[layer]
    E, K, N = d["E"], d["K"], d["N"]
    if quant == "int4_zp":
        from moe_coverage_quant import INT4_GROUP, LAYER, int4_layer
        assert d == LAYER, "int4_zp: the coverage layer (mixtral) only"
        w1, w2, s1, s2, z1, z2 = int4_layer(torch, "cuda", torch.Generator(device="cuda").manual_seed(0))
        return w1, w2, dict(use_int4_w4a16=True, block_shape=[0, INT4_GROUP], w1_scale=s1, w2_scale=s2, w1_zp=z1,
                            w2_zp=z2)
    wdt = torch.bfloat16 if quant == "bf16" else torch.float8_e4m3fn
    if quant == "bf16":
        kw = {}
    elif quant == "fp8_block":
        kw = dict(use_fp8_w8a8=True, block_shape=[128, 128],
                  w1_scale=torch.full((E, 2 * N // 128, K // 128), 1 / 64, device="cuda"),
                  w2_scale=torch.full((E, K // 128, N // 128), 1 / 64, device="cuda"))
    else:
        kw = dict(use_fp8_w8a8=True, w1_scale=torch.full((E,), 1 / 64, device="cuda"),
                  w2_scale=torch.full((E,), 1 / 64, device="cuda"))
    return random_weights(torch, E, 2 * N, K, wdt), random_weights(torch, E, K, N, wdt), kw


def moe_call(torch, aotriton, w1, w2, kw, M, topk):
    """(one fused_experts call on fresh random tokens and routing, its topk ids)."""
    E, K = w1.shape[0], w2.shape[1]  # w2 [E, K, N] (int4: N // 2 packed bytes)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    ids = torch.rand(M, E, device="cuda").topk(topk, dim=-1).indices.to(torch.int32)
    w = torch.rand(M, topk, device="cuda") + 0.1
    w = w / w.sum(-1, keepdim=True)
    out = torch.empty_like(x)
    ws = torch.empty(aotriton.fused_experts_workspace_size(x, w1, w2, w, ids, **kw), dtype=torch.uint8, device="cuda")
    return (lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, workspace=ws, **kw)), ids


def decode_calls(torch, aotriton, B, ctx):
    """(flash_attn_with_kvcache alone, the same with this step's token appended first) on a random
    paged cache of B sequences of ctx keys (the appended form's cache holds ctx - 1 before it)."""
    blocks = B * ctx // PAGE
    k_cache = torch.randn(blocks, PAGE, HK, D, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    table = torch.randperm(blocks, device="cuda").view(B, ctx // PAGE).to(torch.int32)
    q = torch.randn(B, 1, HQ, D, device="cuda", dtype=torch.bfloat16)
    cs = torch.full((B,), ctx, dtype=torch.int32, device="cuda")
    k_new = torch.randn(B, 1, HK, D, device="cuda", dtype=torch.bfloat16)
    v_new = torch.randn_like(k_new)
    cs_append = cs - 1
    alone = lambda: aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cs,  # noqa: E731
                                                     block_table=table, check_inputs=False)
    # kv_append lets the decode start at once; its programs hint L2 for their first cached rows
    # meanwhile (tritonsrc/flash/kv_prefetch.py).
    append = lambda: aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, k=k_new, v=v_new,  # noqa: E731
                                                      cache_seqlens=cs_append, block_table=table,
                                                      check_inputs=False)
    return alone, append


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--tokens", default="1,8,64")
    ap.add_argument("--layers", default=",".join(MOE))
    ap.add_argument("--quants", default="bf16,fp8_tensor", help="bf16, fp8_tensor, fp8_block, int4_zp (mixtral)")
    ap.add_argument("--no-decode", action="store_true", help="skip the decode attention cases")
    ap.add_argument("--exclude", default="", help="rule names launched without PDL (AOTRITON_PDL_EXCLUDE)")
    ap.add_argument("--json", default=str(REPO / "bench/results/pdl_sm90.json"))
    args = ap.parse_args()
    if args.exclude:
        os.environ["AOTRITON_PDL_EXCLUDE"] = args.exclude  # read by the runtime at its first launch
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton

    import aotriton

    dev = "cuda"
    torch.manual_seed(0)
    src = torch.empty(2 ** 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    bw = 2 * 2 ** 30 / (triton.testing.do_bench(lambda: dst.copy_(src), rep=100, return_mode="median") * 1e-3)
    del src, dst

    def a_b(fn):
        """(off ms, on ms): graph-timed with PDL off, then on; the outputs must agree bitwise."""
        ms, outs = [], []
        for on in (False, True):
            aotriton.set_programmatic_dependent_launch(on)
            fn()
            torch.cuda.synchronize()
            ms.append(triton.testing.do_bench_cudagraph(fn, rep=200, return_mode="median"))
            outs.append(fn().clone())
            torch.cuda.synchronize()
        aotriton.set_programmatic_dependent_launch(False)
        assert torch.equal(outs[0], outs[1]), "the output changed with programmatic dependent launch"
        return ms

    rows = []
    gpu = torch.cuda.get_device_name()
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "aotriton": aotriton.version(),
            "profile": aotriton.build_profile(), "commit": commit_id(), "copy_bandwidth_GBps": round(bw / 1e9, 1),
            "pdl_exclude": args.exclude}
    print(f"GPU {gpu}, torch {meta['torch']}, triton {meta['triton']}, aotriton {meta['aotriton']} "
          f"(commit {meta['commit']}); device copy bandwidth {bw / 1e9:.0f} GB/s")
    print("| case | off ms | on ms | saved us | roofline off | roofline on |\n|---|---|---|---|---|---|", flush=True)

    def record(case, read_bytes, off, on):
        roof = read_bytes / bw * 1e3
        rows.append({"case": case, "off_ms": round(off, 4), "on_ms": round(on, 4),
                     "saved_us": round((off - on) * 1e3, 2), "roofline_off": round(roof / off, 3),
                     "roofline_on": round(roof / on, 3)})
        print(f"| {case} | {off:.4f} | {on:.4f} | {(off - on) * 1e3:.1f} | {roof / off:.2f} | {roof / on:.2f} |",
              flush=True)

    for layer in [name for name in args.layers.split(",") if name]:  # --layers= : decode attention only
        topk = MOE[layer]["topk"]
        for quant in args.quants.split(","):
            w1, w2, kw = moe_weights(torch, layer, quant)
            for M in [int(t) for t in args.tokens.split(",")]:
                call, ids = moe_call(torch, aotriton, w1, w2, kw, M, topk)
                off, on = a_b(call)
                touched = torch.unique(ids).numel() * expert_bytes(w1, w2, *(kw.get(k) for k in (
                    "w1_scale", "w2_scale", "w1_zp", "w2_zp")))
                record(f"fused_experts {layer} {quant} M={M}", touched, off, on)
            del w1, w2, call, ids  # the call holds the weights: free them before the next layer's
            torch.cuda.empty_cache()

    for B in () if args.no_decode else (1, 8):
        for ctx in (8192, 32768):
            alone, append = decode_calls(torch, aotriton, B, ctx)
            for name, call in ((f"flash_attn_with_kvcache B={B} context={ctx}", alone),
                               (f"flash_attn_with_kvcache+append B={B} context={ctx}", append)):
                off, on = a_b(call)
                record(name, 2 * B * ctx * HK * D * 2, off, on)
            del alone, append
            torch.cuda.empty_cache()

    write_results({"meta": meta, "rows": rows}, args.json, "pdl_sm90.json")


if __name__ == "__main__":
    main()
