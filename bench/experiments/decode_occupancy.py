"""Paged decode (PAGE_TILES, page 64): does a register cap that fits a third
CTA per SM, with the splits to fill it, beat the default? (issue 12; JIT.)

The PAGE_TILES kernel at BLOCK_N 64, 3 stages, 4 warps holds 190 registers:
2 CTAs per SM (72 KB of shared memory would allow 3). maxnreg 168 spills 16
bytes (sm_90 compile); BLOCK_N 32 at 143 registers fits 3 already, and at
maxnreg 128 (8 bytes of spills) 4. The operator's split rule fills 2 CTAs per
SM (decode_configs.choose_splits); here each config runs at that split count
and at 1.5x / 2x it, each call (split kernel + combine) timed by CUDA-graph
replay (median), the output checked against the default config's.

    python3 bench/experiments/decode_occupancy.py [--batches 1,8] [--contexts 8192,32768]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]
HQ, HK, D, PAGE = 32, 4, 128, 64
CONFIGS = [
    {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, "maxnreg": 168},
    {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, "maxnreg": 168},
    {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3, "maxnreg": 128},
    {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4, "maxnreg": 128},
]


def name(c):
    return f"BN{c['BLOCK_N']} st{c['num_stages']} w{c['num_warps']} r{c.get('maxnreg', 0)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--contexts", default="8192,32768")
    args = ap.parse_args()
    import torch
    import triton

    from paged_case import paged_case
    from python.jit.flash_decode import decode_jit
    from tritonsrc.flash.decode_configs import choose_splits

    torch.manual_seed(0)
    dev, dtype = "cuda", torch.bfloat16
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    a = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    copy_ms = triton.testing.do_bench(lambda: b.copy_(a), rep=200, return_mode="median")
    bw = 2 * a.numel() / (copy_ms * 1e-3)
    del a, b
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"copy bandwidth {bw / 1e9:.0f} GB/s; paged page {PAGE}, {HQ} q / {HK} kv heads, D {D}, bf16")
    print("| B | context | splits | config | us/call | roofline | max rel. diff vs default |\n|---|---|---|---|---|---|---|")
    shapes = [(int(b), int(c)) for b in args.batches.split(",") for c in args.contexts.split(",")]
    for B, ctx in shapes:
        q, k, v, table, cs = paged_case(B, ctx, PAGE, HQ, HK, D, dtype, dev)
        mb = table.shape[1]
        kv_bytes = 2 * B * ctx * HK * D * 2
        base = choose_splits(B, 1, HQ, HK, mb * PAGE, sms)
        ref = None
        for splits in sorted({base, base * 3 // 2, 2 * base}):
            for cfg in CONFIGS:
                out = torch.empty_like(q)

                def call(cfg=cfg, splits=splits, out=out):
                    decode_jit(q, k, v, cs, sm_scale=D ** -0.5, block_table=table, num_splits=splits,
                               config=cfg, out=out)
                try:
                    call()
                    torch.cuda.synchronize()
                    us = triton.testing.do_bench_cudagraph(call, rep=100, return_mode="median") * 1e3
                except Exception as e:  # noqa: BLE001  a config that does not compile is a result too
                    print(f"| {B} | {ctx} | {splits} | {name(cfg)} | failed: {str(e)[:80]} | | |", flush=True)
                    continue
                if ref is None:
                    ref = out.float().clone()
                diff = ((out.float() - ref).abs().max() / ref.abs().max()).item()
                print(f"| {B} | {ctx} | {splits} | {name(cfg)} | {us:.1f} | {kv_bytes / bw / (us * 1e-6):.2f} | "
                      f"{diff:.1e} |", flush=True)
        del k, v


if __name__ == "__main__":
    main()
