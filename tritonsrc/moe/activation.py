"""Gated activations of the MoE MLP: out = act(gate) * up, input = [gate | up].

Functional: dtype (fp16/bf16/fp32 for both tensors), ACTIVATION (0 silu, 1 gelu
erf form, 2 gelu tanh form). Tuning: BLOCK (columns per program), num_warps.
Grid: (n_rows, cdiv(n_cols, BLOCK), 1).
"""
import triton
import triton.language as tl

SILU = 0
GELU = 1
GELU_TANH = 2


@triton.jit
def _activation(x, ACTIVATION: tl.constexpr):
    if ACTIVATION == 0:
        return x / (1.0 + tl.exp(-x))
    elif ACTIVATION == 1:
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    else:
        inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        # 0.5 * (1 + tanh(y)) == sigmoid(2y): no cancellation for small y.
        return x / (1.0 + tl.exp(-2.0 * inner))


@triton.jit
def act_and_mul_kernel(out_ptr, in_ptr, n_rows, n_cols, stride_out_row, stride_in_row,
                       ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    """out[r, c] = act(in[r, c]) * in[r, n_cols + c].

    out_ptr: [n_rows, n_cols], row stride stride_out_row, columns contiguous.
    in_ptr: [n_rows, 2 * n_cols], row stride stride_in_row, columns contiguous.
    n_rows is only used by the launch grid.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    src = in_ptr + row * stride_in_row
    gate = tl.load(src + cols, mask=mask).to(tl.float32)
    up = tl.load(src + n_cols + cols, mask=mask).to(tl.float32)
    y = _activation(gate, ACTIVATION) * up
    tl.store(out_ptr + row * stride_out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)
