"""Backward of act_and_mul inside fused_experts, with the routing weights' gradient.

Per slot row r (h = [gate | up], the GEMM1 output; g = dA_r, the gradient of
the GEMM2 input *before* the routing weight w_r):
    a       = act(gate) * up                     (recomputed, rounded to the dtype
                                                  the forward's GEMM2 consumed)
    dw[r]   = sum_c a[c] * g[c]                  (= <GEMM2 output row, d out row>,
                                                  since GEMM2 is linear in a)
    dgate   = w_r * g * up * act'(gate)
    dup     = w_r * g * act(gate)
dh may be h itself (in place: each program reads its columns before writing them).

Functional: dtype (fp16/bf16 for h, dh, a, g; dw and w fp32), ACTIVATION (0 silu,
1 gelu erf form, 2 gelu tanh form). Tuning: BLOCK (columns per step), num_warps.
Grid: (n_rows, 1, 1): one program per row, looping over the columns.
"""
import triton
import triton.language as tl


@triton.jit
def _act_and_grad(x, ACTIVATION: tl.constexpr):
    """(act(x), act'(x)) in fp32."""
    if ACTIVATION == 0:
        s = 1.0 / (1.0 + tl.exp(-x))
        return x * s, s * (1.0 + x * (1.0 - s))
    elif ACTIVATION == 1:
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
        return x * cdf, cdf + x * tl.exp(-0.5 * x * x) * 0.3989422804014327
    else:
        # 0.5 * (1 + tanh(y)) = sigmoid(2y) = s; tanh'(y) / 2 = 2 s (1 - s)
        y = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        s = 1.0 / (1.0 + tl.exp(-2.0 * y))
        dy = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
        return x * s, s + x * 2.0 * s * (1.0 - s) * dy


@triton.jit
def act_and_mul_bwd_kernel(h_ptr, g_ptr, w_ptr, dh_ptr, a_ptr, dw_ptr, n_rows, n_cols,
                           stride_h_row, stride_g_row, stride_dh_row, stride_a_row,
                           ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    """h_ptr/dh_ptr [n_rows, 2 * n_cols]; g_ptr/a_ptr [n_rows, n_cols]; w_ptr/dw_ptr
    fp32 [n_rows] contiguous. Columns contiguous everywhere."""
    row = tl.program_id(0).to(tl.int64)
    w = tl.load(w_ptr + row)
    h_row = h_ptr + row * stride_h_row
    dh_row = dh_ptr + row * stride_dh_row
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK):
        cols = c0 + tl.arange(0, BLOCK)
        mask = cols < n_cols
        gate = tl.load(h_row + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(h_row + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + row * stride_g_row + cols, mask=mask, other=0.0).to(tl.float32)
        act, dact = _act_and_grad(gate, ACTIVATION)
        a = (act * up).to(a_ptr.dtype.element_ty)
        dw += a.to(tl.float32) * g
        gw = g * w
        tl.store(a_ptr + row * stride_a_row + cols, a, mask=mask)
        tl.store(dh_row + cols, (gw * up * dact).to(dh_ptr.dtype.element_ty), mask=mask)
        tl.store(dh_row + n_cols + cols, (gw * act).to(dh_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + row, tl.sum(dw, axis=0))
