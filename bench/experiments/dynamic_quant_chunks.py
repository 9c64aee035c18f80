"""The decode dynamic per-tensor fp8 quantization through the Triton JIT, no build needed
(issue 18.3): the two chunked launches (fused_helpers.fp8_dynamic_amax_chunks_kernel +
fp8_dynamic_quant_chunks_kernel, the rules' configs) checked bitwise against the
reference (act_and_mul_kernel, then torch's IEEE division) and timed against the
one-program kernel they replaced (kept below as the baseline: it measured 9.8 us per
quantization in the operator on the H200, 2026-12-05).

    python bench/experiments/dynamic_quant_chunks.py [--reps 200]

Each time is one CUDA graph of `reps` back-to-back quantizations (launch gaps included,
no PDL: the JIT launches plainly), divided by reps; median of 10 replays.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from tritonsrc.moe import configs as C  # noqa: E402
from tritonsrc.moe.activation import act_and_mul_kernel  # noqa: E402
from tritonsrc.moe.fused_helpers import (FP8_MAX, SCALE_FLOOR, _chunk_values, _quantize_fp8,  # noqa: E402
                                         fp8_dynamic_amax_chunks_kernel, fp8_dynamic_quant_chunks_kernel)

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_common import device_line  # noqa: E402
from fwd_timing_methods import graph_us  # noqa: E402  (back-to-back graph replays, per-call us)

# (name, rows, columns of y, activation): decode's GEMM inputs
CASES = [("mixtral M=1 GEMM1 input", 1, 4096, -1), ("mixtral M=1 GEMM2 input (silu)", 2, 14336, 0),
         ("deepseek M=1 GEMM1 input", 1, 7168, -1), ("deepseek M=1 GEMM2 input (silu)", 8, 2048, 0),
         ("deepseek M=8 GEMM1 input", 8, 7168, -1), ("deepseek M=8 GEMM2 input (silu)", 64, 2048, 0),
         ("mixtral M=64 GEMM2 input (silu)", 128, 14336, 0)]  # 1792 chunks: three launches before 2026-12-05


@triton.jit
def one_program_baseline(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, stride_qm, ACTIVATION: tl.constexpr,
                         BLOCK_K: tl.constexpr, CHUNKS: tl.constexpr):
    """The replaced kernel's one-tile path (8932bf0), for the A/B only: all of y in one
    [CHUNKS, BLOCK_K] tile of one program."""
    cols = tl.arange(0, BLOCK_K)
    c = tl.arange(0, CHUNKS)
    chunks_per_row = tl.cdiv(K, BLOCK_K)
    n = M * chunks_per_row
    y = _chunk_values(x_ptr, stride_xm, c, cols, chunks_per_row, n, K, BLOCK_K, ACTIVATION)
    scale = tl.div_rn(tl.maximum(tl.max(tl.max(tl.abs(y), axis=1), axis=0).to(tl.float32), SCALE_FLOOR), FP8_MAX)
    tl.store(scale_ptr, scale)
    _quantize_fp8(y.to(tl.float32), scale, q_ptr, stride_qm, c, cols, chunks_per_row, n, K, BLOCK_K)


def chunked(x, q, scale, partials, ids, M, K, act):
    """The operator's two launches; ids: every row a kept slot of expert 0 (with the activation
    the amax step reads them, as fused_experts' GEMM2 input)."""
    n = max(M * triton.cdiv(K, C.DYNAMIC_QUANT_CHUNK), 1)
    fp8_dynamic_amax_chunks_kernel[(n, )](x, partials, ids, ids, M, K, x.stride(0), 1, 0, ACTIVATION=act,
                                          BLOCK_K=C.DYNAMIC_QUANT_CHUNK, num_warps=4)
    fp8_dynamic_quant_chunks_kernel[(n, )](x, q, scale, partials, M, K, x.stride(0), q.stride(0), ACTIVATION=act,
                                           BLOCK_K=C.DYNAMIC_QUANT_CHUNK, BLOCK_P=C.DYNAMIC_QUANT_MAX_CHUNKS,
                                           num_warps=4)


def baseline(x, q, scale, partials, M, K, act):
    one_program_baseline[(1, )](x, q, scale, M, K, x.stride(0), q.stride(0), ACTIVATION=act, BLOCK_K=1024,
                                CHUNKS=32, num_warps=32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    dev = "cuda"
    print(device_line())
    print("| input | rows x cols | chunks | bitwise | one program us | chunked us | ratio |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for name, M, K, act in CASES:
        gen = torch.Generator(device=dev).manual_seed(M * 31 + K)
        x = (torch.randn(M, 2 * K if act >= 0 else K, device=dev, generator=gen) * 3).to(torch.bfloat16)
        y = x
        if act >= 0:  # the reference activation: the kernel the operator no longer launches here
            y = torch.empty(M, K, device=dev, dtype=torch.bfloat16)
            act_and_mul_kernel[(M, triton.cdiv(K, 1024))](y, x, M, K, y.stride(0), x.stride(0), ACTIVATION=act,
                                                          BLOCK=1024)
        # IEEE divisions as the kernels do them: on CUDA torch divides by a Python scalar as a
        # multiply by its reciprocal (1 ulp off at times), which made this check fail 4 of 6
        # cases on the H200 (2026-12-05) with the kernels right.
        amax = y.float().abs().amax().clamp(min=1e-10)
        ref_s = amax / torch.full_like(amax, 448.0)
        ref_q = (y.float() / ref_s).clamp(-448, 448).to(torch.float8_e4m3fn)
        q = torch.full((M, K), 0x7F, device=dev, dtype=torch.uint8).view(torch.float8_e4m3fn)  # poison (NaN)
        s = torch.full((1, ), float("nan"), device=dev)
        partials = torch.full((C.DYNAMIC_QUANT_MAX_CHUNKS, ), float("nan"), device=dev)
        ids = torch.zeros(M, dtype=torch.int32, device=dev)
        chunked(x, q, s, partials, ids, M, K, act)
        ok = torch.equal(s[0], ref_s) and torch.equal(q.view(torch.uint8), ref_q.view(torch.uint8))
        bad += not ok
        t_one = graph_us(lambda: baseline(x, q, s, partials, M, K, act), args.reps) if M * K <= 32768 else float("nan")
        t_chunk = graph_us(lambda: chunked(x, q, s, partials, ids, M, K, act), args.reps)
        print(f"| {name} | {M} x {K} | {M * triton.cdiv(K, C.DYNAMIC_QUANT_CHUNK)} | {'yes' if ok else 'NO'} | "
              f"{t_one:.2f} | {t_chunk:.2f} | {t_one / t_chunk:.2f} |")
    print(f"{len(CASES) - bad} bitwise, {bad} not")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
