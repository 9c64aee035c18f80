"""Decode over a paged KV cache on the GPU: aotriton.flash_attn_with_kvcache
against torch SDPA's best backend on the same (unpaged) cache, in one run.

    python bench/bench_decode.py [--prefix install] [--batches 1,8,64]
                                 [--contexts 1024,4096,8192,16384,32768,65536,131072]
                                 [--pages 64] [--json bench/results/decode_sm90.json]

Shape: one new query token (seqlen_q 1), 32 q heads / 4 kv heads (GQA 8:1),
head dim 128, bf16; every sequence holds `context` tokens. The paged cache has
a random block table (a random permutation of the blocks); SDPA reads the
same tokens from a contiguous [B, context, Hk, D] cache (viewed as
[B, Hk, context, D]) with enable_gqa=True, and the best of its flash,
efficient, cuDNN and math backends is reported (a backend that rejects the
call is skipped).

Columns:
  aot ms        flash_attn_with_kvcache(check_inputs=False: no host sync), one
                CUDA graph replay per call (do_bench_cudagraph median).
  splits        the split-KV count the dispatcher chose.
  roofline      (bytes of K and V read, 2 * B * context * Hk * D * 2 / device
                copy bandwidth measured in this run, 2 x bytes of a 1 GiB
                device-to-device copy per second) / aot ms. 1.0 = at the roofline.
  sdpa ms, sdpa roofline, backend: the same for SDPA's best backend.
  best forced splits, its ms: the fastest of --sweep-splits (num_splits forced),
                to check the dispatcher's choice.
Results go to --json (rows with mode "decode", GPU, versions, commit) and, when
$OUT is set, to $OUT/decode_sm90.json.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from bench_common import commit_id, copy_bandwidth

REPO = Path(__file__).resolve().parent.parent
HQ, HK, D = 32, 4, 128


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--contexts", default="1024,4096,8192,16384,32768,65536,131072")
    ap.add_argument("--pages", default="64")
    ap.add_argument("--sweep-splits", default="1,2,4,8,16,32,64,128",
                    help="also time these forced num_splits and report the best (tunes the dispatcher); '' skips")
    ap.add_argument("--json", default=str(REPO / "bench/results/decode_sm90.json"))
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO)]
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import aotriton
    from aotriton import _decode_ops

    dev, dtype = "cuda", torch.bfloat16
    torch.manual_seed(0)

    def t_graph_ms(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}

    def sdpa_best(q, k, v, with_math):
        """(ms, backend) of the fastest SDPA backend that accepts the call."""
        best = (float("nan"), "none")
        for name, be in backends.items():
            if name == "math" and not with_math:
                continue
            def call(be=be):
                with sdpa_kernel([be]):
                    return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            try:
                ms = t_graph_ms(call)
            except Exception:  # noqa: BLE001  a backend that rejects this shape/GQA is skipped
                torch.cuda.synchronize()
                continue
            if not ms >= best[0]:
                best = (ms, name)
        return best

    bw = copy_bandwidth(dev)
    gpu = torch.cuda.get_device_name()
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "aotriton": aotriton.version(),
            "profile": aotriton.build_profile(), "commit": commit_id(), "copy_bandwidth_GBps": round(bw / 1e9, 1),
            "shape": {"seqlen_q": 1, "hq": HQ, "hk": HK, "d": D, "dtype": "bf16"}}
    print(f"GPU {gpu}, torch {meta['torch']}, triton {meta['triton']}, aotriton {meta['aotriton']} "
          f"(profile {meta['profile']}, commit {meta['commit']}); device copy bandwidth {bw / 1e9:.0f} GB/s")
    cols = ["B", "context", "page", "splits", "aot ms", "roofline", "sdpa ms", "sdpa roofline", "backend",
            "best forced splits", "its ms"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)

    rows = []
    for page in [int(p) for p in args.pages.split(",")]:
        for B in [int(b) for b in args.batches.split(",")]:
            for ctx in [int(c) for c in args.contexts.split(",")]:
                torch.cuda.empty_cache()
                mb = triton.cdiv(ctx, page)
                nb = B * mb
                k_cache = torch.randn(nb, page, HK, D, device=dev, dtype=dtype)
                v_cache = torch.randn(nb, page, HK, D, device=dev, dtype=dtype)
                table = torch.randperm(nb, device=dev).view(B, mb).to(torch.int32)
                q = torch.randn(B, 1, HQ, D, device=dev, dtype=dtype)
                cs = torch.full((B,), ctx, dtype=torch.int32, device=dev)

                def aot():
                    return aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cs,
                                                            block_table=table, check_inputs=False)

                out = torch.empty_like(q)
                lse = torch.empty(B, HQ, 1, device=dev, dtype=torch.float32)
                _, splits = _decode_ops.workspace_plan(out, lse, k_cache, v_cache, q, None, None, cs, table, None,
                                                       D ** -0.5, False, -1, -1, 0.0, 0,
                                                       _decode_ops.num_sms(q.device))
                aot_ms = t_graph_ms(aot)
                sweep = {}
                for n in [int(x) for x in args.sweep_splits.split(",") if x]:
                    sweep[n] = t_graph_ms(lambda n=n: aotriton.flash_attn_with_kvcache(
                        q, k_cache, v_cache, cache_seqlens=cs, block_table=table, check_inputs=False, num_splits=n))
                best_n = min(sweep, key=sweep.get) if sweep else splits
                # The same tokens, contiguous, for SDPA: [B, Hk, ctx, D] views of [B, ctx, Hk, D].
                idx = torch.arange(ctx, device=dev)
                kc = k_cache[table[:, idx // page].long(), idx % page]  # [B, ctx, Hk, D]
                vc = v_cache[table[:, idx // page].long(), idx % page]
                if B * ctx <= 2 ** 20:  # a sanity check against fp32 SDPA (test/gpu covers correctness)
                    ref = torch.nn.functional.scaled_dot_product_attention(
                        q.transpose(1, 2).float(), kc.transpose(1, 2).float(), vc.transpose(1, 2).float(),
                        enable_gqa=True).transpose(1, 2)
                    err = (aot().float() - ref).abs().max().item()
                    assert err < 2e-2, f"aotriton decode disagrees with SDPA (fp32): max error {err}"
                    del ref
                del k_cache, v_cache
                torch.cuda.empty_cache()
                kv_bytes = 2 * B * ctx * HK * D * 2
                # math repeats K/V per q head (8x the cache): only where that is small.
                sdpa_ms, backend = sdpa_best(q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2),
                                             with_math=kv_bytes <= 2 ** 31)
                del kc, vc
                roof = kv_bytes / bw * 1e3
                r = {"mode": "decode", "batch": B, "context": ctx, "page_size": page, "hq": HQ, "hk": HK, "d": D,
                     "dtype": "bf16", "num_splits": splits, "aot_ms": aot_ms, "roofline": roof / aot_ms,
                     "sdpa_ms": sdpa_ms, "sdpa_roofline": roof / sdpa_ms, "sdpa_backend": backend,
                     "kv_bytes": kv_bytes, "best_forced_splits": best_n,
                     "best_forced_ms": sweep.get(best_n, aot_ms),
                     "forced_ms": {str(n): round(v, 4) for n, v in sweep.items()}}
                rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
                print(f"| {B} | {ctx} | {page} | {splits} | {aot_ms:.4f} | {roof / aot_ms:.2f} | {sdpa_ms:.4f} | "
                      f"{roof / sdpa_ms:.2f} | {backend} | {best_n} | {r['best_forced_ms']:.4f} |", flush=True)

    doc = {"meta": meta, "rows": rows}
    for path in [args.json] + ([os.path.join(os.environ["OUT"], "decode_sm90.json")] if os.environ.get("OUT") else []):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
