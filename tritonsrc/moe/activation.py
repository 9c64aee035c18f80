"""Gated activations of the MoE MLP: out = act(gate) * up.

Functional: dtype (fp16/bf16/fp32 for both tensors), ACTIVATION:
  0 silu, 1 gelu (erf form), 2 gelu (tanh form): input = [gate | up] halves,
    out = act(gate) * up (0 is also "swiglu");
  3 swigluoai, gpt-oss's clamped SwiGLU (vLLM's SwigluOAIAndMul and the
    gpt-oss reference): input columns interleaved [g0, u0, g1, u1, ...],
    g = min(g, limit), u = clamp(u, -limit, limit),
    out = g * sigmoid(alpha * g) * (u + 1), alpha = 1.702, limit = 7.0
    (the values every gpt-oss checkpoint uses; fixed here).
Tuning: BLOCK (columns per program), num_warps.
Grid: (n_rows, cdiv(n_cols, BLOCK), 1).
"""
import triton
import triton.language as tl

from ..pdl import let_successor_start_then_wait

SILU = 0
GELU = 1
GELU_TANH = 2
SWIGLU_OAI = 3
SWIGLU_OAI_ALPHA = 1.702
SWIGLU_OAI_LIMIT = 7.0


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
                       ACTIVATION: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr = False):
    """out[r, c] = act(in[r, c]) * in[r, n_cols + c] (ACTIVATION 3: the interleaved pair 2c, 2c + 1).

    out_ptr: [n_rows, n_cols], row stride stride_out_row, columns contiguous.
    in_ptr: [n_rows, 2 * n_cols], row stride stride_in_row, columns contiguous.
    n_rows is only used by the launch grid.
    """
    let_successor_start_then_wait(USE_PDL)  # GEMM2 comes next (tritonsrc/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    y = gated_product(in_ptr + row * stride_in_row, cols, mask, n_cols, ACTIVATION)
    tl.store(out_ptr + row * stride_out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gated_product(src, cols, mask, n_cols, ACTIVATION: tl.constexpr):
    """act(gate) * up in fp32 at columns `cols` of the input rows at `src` (pointer
    tensors broadcast against cols); masked columns give 0."""
    if ACTIVATION == 3:
        gate = tl.load(src + 2 * cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(src + 2 * cols + 1, mask=mask, other=0.0).to(tl.float32)
        gate = tl.minimum(gate, 7.0)
        up = tl.minimum(tl.maximum(up, -7.0), 7.0)
        return gate / (1.0 + tl.exp(-1.702 * gate)) * (up + 1.0)
    else:
        gate = tl.load(src + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(src + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        return _activation(gate, ACTIVATION) * up
