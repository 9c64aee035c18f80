"""Per-kernel CUDA times of one int4 fused_experts call (torch.profiler), the dot-order route against
AOTRITON_MOE_WQ_DOT_ORDER=0, Mixtral-like layer with zero points (bench/moe_coverage_quant.py's):
which launch makes an operator row slower than its GEMMs say.
    python3 bench/experiments/int4_fused_kernels.py --tokens 16,32"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="16")
    args = ap.parse_args()
    import torch
    import aotriton
    from moe_coverage_quant import LAYER, INT4_GROUP, int4_layer
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    w1, w2, s1, s2, z1, z2 = int4_layer(torch, dev, gen)
    E, topk, K = LAYER["E"], LAYER["topk"], LAYER["K"]
    for M in [int(t) for t in args.tokens.split(",")]:
        ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32).contiguous()
        w = torch.rand(M, topk, device=dev, generator=gen) + 0.1
        w = w / w.sum(-1, keepdim=True)
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        for env in ("1", "0"):
            os.environ["AOTRITON_MOE_WQ_DOT_ORDER"] = env
            call = lambda: aotriton.fused_experts(x, w1, w2, w, ids, out=out, use_int4_w4a16=True,  # noqa: E731
                                                  block_shape=[0, INT4_GROUP], w1_scale=s1, w2_scale=s2,
                                                  w1_zp=z1, w2_zp=z2)
            for _ in range(5):
                call()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    call()
                torch.cuda.synchronize()
            print(f"== M={M} AOTRITON_MOE_WQ_DOT_ORDER={env}")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))


if __name__ == "__main__":
    main()
