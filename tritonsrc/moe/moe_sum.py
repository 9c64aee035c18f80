"""Sum of the per-expert outputs of each token: out[m, :] = sum_k in[m, k, :].

Functional: dtype. Tuning: BLOCK (columns per program), num_warps.
Grid: (n_tokens, cdiv(hidden, BLOCK), 1).
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor


@triton.jit
def moe_sum_kernel(out_ptr, in_ptr, n_tokens, topk, hidden,
                   stride_out_m, stride_in_m, stride_in_k, BLOCK: tl.constexpr, USE_PDL: tl.constexpr = False):
    """out: [n_tokens, hidden] (row stride stride_out_m); in: [n_tokens, topk,
    hidden] with strides (stride_in_m, stride_in_k, 1). Accumulates in fp32.
    n_tokens is only used by the launch grid."""
    wait_for_predecessor(USE_PDL)
    m = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    src = in_ptr + m * stride_in_m + cols
    for k in range(0, topk):
        acc += tl.load(src + k * stride_in_k, mask=mask).to(tl.float32)
    tl.store(out_ptr + m * stride_out_m + cols, acc.to(out_ptr.dtype.element_ty), mask=mask)
