"""Activations in the sm_90 int4 GEMM's dot order (grouped_gemm_wq_hopper.py, X_DOT_ORDER).

That kernel visits each K tile of 2^n values in an order of its own (_k_order there: the order
in which its dequantized weights come out of their nibbles). Given activations already in that
order it copies them to shared memory as they are, instead of permuting every tile in
registers. Logical (dot) k bit b of a tile comes from memory k bit _k_order(n)[n - 1 - b]
(b >= 5: b - 2;  4: 2 (bf16) or 1 (fp16);  3: 0;  2: n - 1;  1: n - 2;  0: 1 (bf16) or 2 (fp16)).

dot_order_source maps dot positions to memory positions; dot_order_copy_kernel writes the
hidden states in that order (GEMM1's input) and act_and_mul_dot_order_kernel writes GEMM2's input
so. python/jit/moe_quant.dot_order_activations is the reference.

Grid of both: (n_rows, cdiv(n_cols, BLOCK), 1).
"""
import triton
import triton.language as tl
from triton.runtime.jit import constexpr_function

from ..pdl import let_successor_start_then_wait
from .activation import gated_product
from .grouped_gemm_wq_hopper import _k_order


@constexpr_function
def _memory_bits(block_k, fp16):
    """The memory k bit of each dot-order k bit of a tile, lowest first (grouped_gemm_wq_hopper._k_order)."""
    n = block_k.bit_length() - 1
    return tuple(reversed(_k_order(n, fp16)))


@triton.jit
def dot_order_source(cols, BLOCK_K: tl.constexpr, FP16: tl.constexpr):
    """The memory column whose value sits at dot-order column `cols` (K tiles of BLOCK_K)."""
    BITS: tl.constexpr = _memory_bits(BLOCK_K, FP16)
    k = cols % BLOCK_K
    src = cols - k
    for b in tl.static_range(len(BITS)):
        src = src | (((k >> b) & 1) << BITS[b])
    return src


@triton.jit
def dot_order_copy_kernel(out_ptr, in_ptr, n_rows, n_cols, stride_out_row, stride_in_row,
                          BLOCK_K: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr = False):
    """out[r, c] = in[r, dot_order_source(c)]; n_cols a multiple of BLOCK_K. n_rows: the grid's."""
    let_successor_start_then_wait(USE_PDL)  # GEMM1 comes next (tritonsrc/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    src = dot_order_source(cols, BLOCK_K, out_ptr.dtype.element_ty == tl.float16)
    mask = (cols < n_cols) & (src < n_cols)  # (a partial last tile would read past the row)
    x = tl.load(in_ptr + row * stride_in_row + src, mask=mask)
    tl.store(out_ptr + row * stride_out_row + cols, x, mask=mask)


@triton.jit
def act_and_mul_dot_order_kernel(out_ptr, in_ptr, n_rows, n_cols, stride_out_row, stride_in_row,
                                 ACTIVATION: tl.constexpr, DOT_ORDER_K: tl.constexpr, BLOCK: tl.constexpr,
                                 USE_PDL: tl.constexpr = False):
    """activation.act_and_mul_kernel with output column c taking the value of column
    dot_order_source(c) (the same K tile of DOT_ORDER_K columns, 64 or 128); n_cols a multiple of it."""
    let_successor_start_then_wait(USE_PDL)  # GEMM2 comes next (tritonsrc/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    src = dot_order_source(cols, DOT_ORDER_K, out_ptr.dtype.element_ty == tl.float16)
    mask = (cols < n_cols) & (src < n_cols)
    y = gated_product(in_ptr + row * stride_in_row, src, mask, n_cols, ACTIVATION)
    tl.store(out_ptr + row * stride_out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)

