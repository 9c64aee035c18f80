"""One paged-KV decode call (bench_decode's shape: 32 q / 4 kv heads, D 128,
bf16, page 64, random block table) after WARMUP calls: the target of
bench/experiments/ncu_decode.sh (ncu skips the warm-up launches).

    python3 bench/experiments/decode_one_call.py [--batch 1] [--context 131072] [--warmup 3]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HQ, HK, D, PAGE = 32, 4, 128, 64


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=131072)
    ap.add_argument("--splits", type=int, default=0, help="num_splits (0: the dispatcher's choice)")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(Path(__file__).parent)]
    import torch

    import aotriton
    from paged_case import paged_case

    B, ctx = args.batch, args.context
    q, k_cache, v_cache, table, cs = paged_case(B, ctx, PAGE, HQ, HK, D, torch.bfloat16)
    for _ in range(args.warmup + 1):
        aotriton.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cs, block_table=table,
                                         check_inputs=False, num_splits=args.splits)
    torch.cuda.synchronize()
    print(f"paged decode B={B} context={ctx}: {args.warmup} warm-up calls + 1")


if __name__ == "__main__":
    main()
