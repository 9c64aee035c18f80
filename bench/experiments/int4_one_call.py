"""One int4 w4a16 fused_experts call on the Mixtral-like layer of
bench/moe_coverage_quant.py, after WARMUP calls: the target of
bench/experiments/ncu_int4.sh (ncu skips the warm-up launches).

    python3 bench/experiments/int4_one_call.py [--tokens 1] [--warmup 3]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    sys.path[:0] = [str(Path(args.prefix) / "lib/python"), str(REPO / "bench")]
    import torch

    import aotriton
    from moe_coverage_quant import INT4_GROUP, LAYER, int4_layer

    E, topk, K, M = LAYER["E"], LAYER["topk"], LAYER["K"], args.tokens
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    w1, w2, s1, s2, z1, z2 = int4_layer(torch, dev, gen)
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32).contiguous()
    w = torch.full((M, topk), 1.0 / topk, device=dev)
    for _ in range(args.warmup + 1):
        aotriton.fused_experts(x, w1, w2, w, ids, use_int4_w4a16=True, block_shape=[0, INT4_GROUP],
                               w1_scale=s1, w2_scale=s2, w1_zp=z1, w2_zp=z2)
    torch.cuda.synchronize()
    print(f"int4 fused_experts M={M}: {args.warmup} warm-up calls + 1")


if __name__ == "__main__":
    main()
