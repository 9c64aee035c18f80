"""The "quant" rows of bench/bench_moe_coverage.py (issue 13, item 6):

  int4 w4a16 decode: fused_experts on a Mixtral-like layer (E=8, top-2,
      K=4096, N=14336, group 128, with zero points, and without: bf16 and fp16) at M = 1..64 tokens; the
      roofline is the bytes of the touched experts' packed weights, scales and
      zero points over the device copy bandwidth measured in the same run,
      divided by the CUDA-graph replay time (1.0 = at the roofline; target 0.8).
  fp8 per channel vs 128x128 block at M = 4096: fused_experts on the same
      layer with per-output-channel weight scales and per-token activation
      scales, against the 128x128-block path (target: within 10%).
"""
import os

from bench_common import expert_bytes

LAYER = dict(E=8, topk=2, K=4096, N=14336)
INT4_GROUP = 128
DECODE_TOKENS = (1, 8, 16, 32, 64)
PREFILL_TOKENS = 4096


def int4_layer(torch, dev, gen, group=INT4_GROUP):
    """The int4 layer's packed weights, scales and zero points (w1, w2, s1, s2,
    z1, z2) for a group size. Random bytes: timing does not depend on the values."""
    E, K, N = LAYER["E"], LAYER["K"], LAYER["N"]
    w1 = torch.randint(0, 256, (E, 2 * N, K // 2), dtype=torch.uint8, device=dev, generator=gen)
    w2 = torch.randint(0, 256, (E, K, N // 2), dtype=torch.uint8, device=dev, generator=gen)
    s1 = torch.rand(E, 2 * N, K // group, device=dev, generator=gen) * 1e-2
    s2 = torch.rand(E, K, N // group, device=dev, generator=gen) * 1e-2
    z1 = torch.randint(0, 256, (E, N, K // group), dtype=torch.uint8, device=dev, generator=gen)
    z2 = torch.randint(0, 256, (E, K // 2, N // group), dtype=torch.uint8, device=dev, generator=gen)
    return w1, w2, s1, s2, z1, z2


def blocks_of_16(torch, ids, E):
    """Align blocks of 16 slots per expert that a routing draw makes: an expert's second block costs
    about an eighth of both GEMMs at M=64 (less with PAIR_BLOCKS), so draws with more of them time slower."""
    return [-(-int(n) // 16) for n in torch.bincount(ids.flatten().long(), minlength=E).tolist()]


def quant_rows(torch, aotriton, t_ms, t_graph_ms, bw, quick=False):
    """Times the rows above; returns them as dicts (printed as a table too)."""
    dev = "cuda"
    E, topk, K, N = LAYER["E"], LAYER["topk"], LAYER["K"], LAYER["N"]
    gen = torch.Generator(device=dev).manual_seed(0)

    def routing(M):
        ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
        w = torch.rand(M, topk, device=dev, generator=gen) + 0.1
        return w / w.sum(-1, keepdim=True), ids.contiguous()

    rows = []
    print("| quant | M | fused ms | graph ms | roofline | vs fp8 block |\n|---|---|---|---|---|---|", flush=True)

    # int4 w4a16 decode.
    w1, w2, s1, s2, z1, z2 = int4_layer(torch, dev, gen)
    # (name, activation dtype, zero points, environment): the default route (on sm_90 the wgmma int4
    # GEMM for group 128, its activations in its dot order) beside the same GEMM permuting them in
    # registers (AOTRITON_MOE_WQ_DOT_ORDER=0) and the Triton kernel it replaced there
    # (AOTRITON_MOE_WQ_HOPPER=0; both read per call), same operands; symmetric weights (no zero
    # points: the HAS_ZP=0 functional) in bf16 and fp16 (fp16 dequantizes by LOP3, bf16 by PRMT).
    forms = [("int4_w4a16_g128_zp", torch.bfloat16, True, {})]
    if torch.cuda.get_device_capability() == (9, 0):
        forms.append(("int4_w4a16_g128_zp_permuting", torch.bfloat16, True, {"AOTRITON_MOE_WQ_DOT_ORDER": "0"}))
        forms.append(("int4_w4a16_g128_zp_triton", torch.bfloat16, True, {"AOTRITON_MOE_WQ_HOPPER": "0"}))
    forms += [("int4_w4a16_g128", torch.bfloat16, False, {}), ("int4_w4a16_g128_fp16", torch.float16, False, {})]
    for M in DECODE_TOKENS[:3] if quick else DECODE_TOKENS:
        w, ids = routing(M)
        experts = torch.unique(ids).numel()
        blocks = sum(blocks_of_16(torch, ids, E))
        for name, dtype, with_zp, env in forms:
            x = torch.randn(M, K, device=dev, dtype=dtype)
            out = torch.empty_like(x)
            kw = dict(use_int4_w4a16=True, block_shape=[0, INT4_GROUP], w1_scale=s1, w2_scale=s2,
                      w1_zp=z1 if with_zp else None, w2_zp=z2 if with_zp else None)
            touched = experts * expert_bytes(w1, w2, s1, s2, *((z1, z2) if with_zp else ()))
            knobs = ("AOTRITON_MOE_WQ_HOPPER", "AOTRITON_MOE_WQ_DOT_ORDER")
            old = {k: os.environ.pop(k) for k in knobs if k in os.environ}
            os.environ.update(env)
            try:
                def fused():
                    return aotriton.fused_experts(x, w1, w2, w, ids, out=out, **kw)
                graph = t_graph_ms(fused)
                fused_ms = t_ms(fused)
            finally:
                for k in knobs:
                    os.environ.pop(k, None)
                os.environ.update(old)
            r = dict(quant=name, M=M, fused_ms=fused_ms, graph_ms=graph,
                     roofline=touched / bw * 1e3 / graph, touched_MB=touched / 1e6, blocks16=blocks)
            rows.append(r)
            print(f"| {r['quant']} | {M} | {r['fused_ms']:.3f} | {graph:.3f} | {r['roofline']:.2f} | |", flush=True)
    del w1, w2, s1, s2, z1, z2
    torch.cuda.empty_cache()

    # fp8 per channel vs 128x128 block at M = 4096 (same random fp8 weights).
    w1 = (torch.randn(E, 2 * N, K, device=dev, generator=gen) * 64).to(torch.float8_e4m3fn)
    w2 = (torch.randn(E, K, N, device=dev, generator=gen) * 64).to(torch.float8_e4m3fn)
    M = PREFILL_TOKENS
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w, ids = routing(M)
    out = torch.empty_like(x)
    modes = {
        "fp8_block": dict(use_fp8_w8a8=True, block_shape=[128, 128],
                          w1_scale=torch.full((E, 2 * N // 128, K // 128), 1e-3, device=dev),
                          w2_scale=torch.full((E, K // 128, N // 128), 1e-3, device=dev)),
        "fp8_per_channel": dict(use_fp8_w8a8=True, per_channel_quant=True,
                                w1_scale=torch.full((E, 2 * N, 1), 1e-3, device=dev),
                                w2_scale=torch.full((E, K, 1), 1e-3, device=dev)),
    }
    times = {}
    for name, kw in modes.items():
        times[name] = t_ms(lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, **kw))
        r = dict(quant=name, M=M, fused_ms=times[name])
        if name == "fp8_per_channel":
            r["vs_fp8_block"] = times[name] / times["fp8_block"]
        rows.append(r)
        ratio = f"{r['vs_fp8_block']:.3f}" if "vs_fp8_block" in r else ""
        print(f"| {name} | {M} | {r['fused_ms']:.3f} | | | {ratio} |", flush=True)
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
