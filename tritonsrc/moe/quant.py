"""fp8 e4m3 activation quantization for the w8a8 grouped GEMM.

per_token_group_quant_fp8_kernel: each row split into groups of GROUP (128)
  along K; scale = max(max|x|, 1e-10) / 448 (the floor keeps all-zero groups
  finite: they quantize to 0 with a tiny positive scale); q = clamp(x / scale).
per_tensor_quant_fp8_kernel: q = clamp(x / scale) with scale read from device
  memory (fp32 [1]), so a captured graph sees the caller's current value.

Constexprs
  functional: GROUP (128, group kernel only); ALIGNED (K and both row strides
              multiples of 16: vector loads/stores); x dtype fp16/bf16 (fp32 works
              too) and q dtype fp8e4nv through the pointer types. fp8e4nv needs
              sm_89+: not built for sm_80.
  tuning:     BLOCK_M (rows per program), BLOCK_K (per-tensor kernel columns
              per program), num_warps; num_stages 1.
Grids:
  per_token_group_quant_fp8_kernel: (cdiv(M, BLOCK_M), cdiv(K, GROUP), 1)
  per_tensor_quant_fp8_kernel:      (cdiv(M, BLOCK_M), cdiv(K, BLOCK_K), 1)
Defaults (sm_90): group: BLOCK_M=8, num_warps=4 (M <= 64: BLOCK_M=1, num_warps=1);
  per-tensor: BLOCK_M=4, BLOCK_K=512, num_warps=4.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor

FP8_MAX = tl.constexpr(448.0)
SCALE_FLOOR = tl.constexpr(1e-10)


@triton.jit
def per_token_group_quant_fp8_kernel(x_ptr, q_ptr, s_ptr, M, K,
                                     stride_xm, stride_qm, stride_sm, stride_sk,
                                     GROUP: tl.constexpr, ALIGNED: tl.constexpr,
                                     BLOCK_M: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Quantize BLOCK_M rows x one group of GROUP columns.

    x_ptr [M, K] fp16/bf16, row stride stride_xm, K contiguous
    q_ptr [M, K] fp8e4nv out, row stride stride_qm, K contiguous
    s_ptr [M, cdiv(K, GROUP)] fp32 out, strides (stride_sm, stride_sk)
    M, K: i32. ALIGNED: K, stride_xm, stride_qm are multiples of 16.
    """
    wait_for_predecessor(USE_PDL)
    if ALIGNED:  # same values, now known to the compiler: vector accesses
        K = K // 16 * 16
        stride_xm = stride_xm // 16 * 16
        stride_qm = stride_qm // 16 * 16
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    g = tl.program_id(1)
    cols = g * GROUP + tl.arange(0, GROUP)
    rows64 = rows.to(tl.int64)
    m = (rows < M)[:, None] & (cols < K)[None, :]
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :],
                mask=m, other=0.0).to(tl.float32)
    q, scale = quantize_groups(x)
    tl.store(q_ptr + rows64[:, None] * stride_qm + cols[None, :],
             q.to(q_ptr.dtype.element_ty), mask=m)
    tl.store(s_ptr + rows64 * stride_sm + g * stride_sk, scale, mask=rows < M)


@triton.jit
def quantize_groups(x):
    """x [rows, GROUP] fp32 -> (q, scale [rows]): one scale per row of the group.
    IEEE division (tl.div_rn): '/' is approximate on GPUs and would differ from
    torch's quantization by one fp8 step near rounding boundaries."""
    scale = tl.div_rn(tl.maximum(tl.max(tl.abs(x), axis=1), SCALE_FLOOR), FP8_MAX)
    return tl.clamp(tl.div_rn(x, scale[:, None]), -FP8_MAX, FP8_MAX), scale


@triton.jit
def per_tensor_quant_fp8_kernel(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, stride_qm,
                                ALIGNED: tl.constexpr, BLOCK_M: tl.constexpr,
                                BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr = False):
    """q = clamp(x / scale, -448, 448) as fp8 e4m3.

    x_ptr [M, K] fp16/bf16, row stride stride_xm, K contiguous
    q_ptr [M, K] fp8e4nv out, row stride stride_qm, K contiguous
    scale_ptr fp32 [1] (device)
    M, K: i32. ALIGNED: K, stride_xm, stride_qm are multiples of 16.
    """
    wait_for_predecessor(USE_PDL)
    if ALIGNED:
        K = K // 16 * 16
        stride_xm = stride_xm // 16 * 16
        stride_qm = stride_qm // 16 * 16
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    rows64 = rows.to(tl.int64)
    m = (rows < M)[:, None] & (cols < K)[None, :]
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :],
                mask=m, other=0.0).to(tl.float32)
    q = tl.clamp(tl.div_rn(x, tl.load(scale_ptr)), -FP8_MAX, FP8_MAX)
    tl.store(q_ptr + rows64[:, None] * stride_qm + cols[None, :],
             q.to(q_ptr.dtype.element_ty), mask=m)


@triton.jit
def per_token_quant_fp8_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm,
                               BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Dynamic per-token fp8 (the w8a8 per-channel GEMM's A operand):
    s[m] = max(max_k |x[m, k]|, 1e-10) / 448, q[m, :] = clamp(x[m, :] / s[m]).

    x_ptr [M, K] fp16/bf16, row stride stride_xm, K contiguous
    q_ptr [M, K] fp8e4nv out, row stride stride_qm, K contiguous
    s_ptr fp32 [M] out, contiguous
    M, K: i32; K, stride_xm and stride_qm are multiples of 16 (the AOT rule
    declares them so: the per-channel path is built for aligned shapes only).
    Grid: (cdiv(M, BLOCK_M), 1, 1); two passes over each row (amax, then
    quantize: the second read mostly hits L2).
    """
    wait_for_predecessor(USE_PDL)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    amax = tl.zeros([BLOCK_M], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + cols[None, :], mask=row_ok[:, None] & (cols < K)[None, :], other=0.0)
        amax = tl.maximum(amax, tl.max(tl.abs(x.to(tl.float32)), axis=1))
    scale = tl.div_rn(tl.maximum(amax, SCALE_FLOOR), FP8_MAX)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        m = row_ok[:, None] & (cols < K)[None, :]
        x = tl.load(x_rows + cols[None, :], mask=m, other=0.0).to(tl.float32)
        q = tl.clamp(tl.div_rn(x, scale[:, None]), -FP8_MAX, FP8_MAX)
        tl.store(q_rows + cols[None, :], q.to(q_ptr.dtype.element_ty), mask=m)
    tl.store(s_ptr + rows, scale, mask=row_ok)
