"""moe_sum's two forms through the JIT, no build needed (issue 18.3): BLOCK_R rows per load
(tritonsrc/moe/moe_sum.py, 2026-12-05) against the row-at-a-time loop it replaced (kept
below as the baseline), with and without fused_experts' dropped-slot check, checked equal.

    python bench/experiments/moe_sum_rows.py [--reps 200]

Each time is one CUDA graph of `reps` back-to-back launches (no PDL) divided by reps;
median of 10 replays (fwd_timing_methods.graph_us).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from tritonsrc.moe.moe_sum import moe_sum_kernel  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_common import device_line  # noqa: E402
from fwd_timing_methods import graph_us  # noqa: E402

# (name, tokens, rows per token, hidden, rows per slot): fused_experts' reductions
CASES = [("mixtral M=1 split 4", 1, 8, 4096, 4), ("deepseek M=1", 1, 8, 7168, 1),
         ("mixtral M=64", 64, 2, 4096, 1), ("deepseek M=64", 64, 8, 7168, 1), ("mixtral M=4096", 4096, 2, 4096, 1)]


@triton.jit
def row_loop_baseline(out_ptr, in_ptr, topk, hidden, stride_out_m, stride_in_m, stride_in_k, BLOCK: tl.constexpr):
    """The replaced form (6c51fc9): one row per iteration."""
    m = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    src = in_ptr + m * stride_in_m + cols
    for k in range(0, topk):
        acc += tl.load(src + k * stride_in_k, mask=mask).to(tl.float32)
    tl.store(out_ptr + m * stride_out_m + cols, acc.to(out_ptr.dtype.element_ty), mask=mask)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    dev = "cuda"
    print(device_line())
    print("| case | row loop us | BLOCK_R 2 / 4 / 8 us | the same + slot check us | equal |\n|---|---|---|---|---|")
    for name, M, rows, H, per_slot in CASES:
        x = torch.randn(M, rows, H, device=dev, dtype=torch.bfloat16)
        ids = torch.zeros(M * rows // per_slot, dtype=torch.int32, device=dev)  # every slot kept
        outs = [torch.empty(M, H, device=dev, dtype=torch.bfloat16) for _ in range(3)]
        grid = (M, triton.cdiv(H, 1024))

        def loop():
            row_loop_baseline[grid](outs[0], x, rows, H, H, x.stride(0), x.stride(1), BLOCK=1024, num_warps=4)

        def block(check, br):
            o = outs[2 if check else 1]
            moe_sum_kernel[grid](o, x, ids, ids, M, rows, H, per_slot if check else 0, 1, 0, o.stride(0), x.stride(0),
                                 x.stride(1), BLOCK=1024, BLOCK_R=br, num_warps=4)

        loop(), block(False, 8), block(True, 8)
        same = torch.equal(outs[1], outs[2]) and (outs[0].float() - outs[1].float()).abs().max().item() <= \
            2 ** -7 * outs[0].float().abs().max().item()
        t0 = graph_us(loop, args.reps)
        plain = [graph_us(lambda: block(False, br), args.reps) for br in (2, 4, 8)]
        checked = [graph_us(lambda: block(True, br), args.reps) for br in (2, 4, 8)]
        print(f"| {name} | {t0:.2f} | {' / '.join(f'{t:.2f}' for t in plain)} | "
              f"{' / '.join(f'{t:.2f}' for t in checked)} | {'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
