"""The gated activation and fp8 128-column group quantization of GEMM2's input
in one kernel (fused_experts with 128x128 block scales): act_and_mul_kernel
followed by per_token_group_quant_fp8_kernel, without the 16-bit intermediate
(at Mixtral-like M=4096 it was 470 MB of extra DRAM traffic) and with one
launch instead of two. The product is rounded to the activation dtype before it
is quantized, as the two kernels store and reload it: the same bits.

Functional: dtype (of the GEMM1 output read: fp16/bf16/fp32), ACTIVATION
  (activation.py), GROUP (128). Built for 16-element aligned rows and columns
  (the operator's workspace always is).
Tuning: BLOCK_M (rows per program), num_warps.
Grid: (cdiv(n_rows, BLOCK_M), cdiv(n_cols, GROUP), 1).
"""
import triton
import triton.language as tl

from ..pdl import let_successor_start_then_wait
from .activation import gated_product
from .quant import quantize_groups


@triton.jit
def act_and_mul_group_quant_fp8_kernel(q_ptr, s_ptr, in_ptr, n_rows, n_cols, stride_q_row, stride_s_row,
                                       stride_s_group, stride_in_row, ACTIVATION: tl.constexpr,
                                       GROUP: tl.constexpr, BLOCK_M: tl.constexpr, USE_PDL: tl.constexpr = False):
    """q[r, c] = fp8 of act(in[r, c]) * in[r, n_cols + c] (ACTIVATION 3: the pair 2c, 2c + 1)
    over its group's scale s[r, c // GROUP] = max |.| / 448 (floored at 1e-10 / 448).

    q_ptr  [n_rows, n_cols] fp8e4nv, row stride stride_q_row, columns contiguous
    s_ptr  [n_rows, cdiv(n_cols, GROUP)] fp32, strides (stride_s_row, stride_s_group)
    in_ptr [n_rows, 2 * n_cols], row stride stride_in_row, columns contiguous
    """
    let_successor_start_then_wait(USE_PDL)  # GEMM2 comes next (tritonsrc/pdl.py)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    g = tl.program_id(1)
    cols = g * GROUP + tl.arange(0, GROUP)
    rows64 = rows.to(tl.int64)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    y = gated_product(in_ptr + rows64[:, None] * stride_in_row, cols[None, :], mask, n_cols, ACTIVATION)
    y = y.to(in_ptr.dtype.element_ty).to(tl.float32)  # as act_and_mul_kernel stores it
    q, scale = quantize_groups(y)
    tl.store(q_ptr + rows64[:, None] * stride_q_row + cols[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + rows64 * stride_s_row + g * stride_s_group, scale, mask=rows < n_rows)
