"""Small kernels the AOT fused_experts operator needs besides the main ones.

zero_dropped_rows_kernel: zero the rows of a [rows, cols] buffer whose slot
  (flat index into topk_ids) moe_align drops (expert map -1, or a local id
  outside [0, num_experts)). The grouped GEMM never writes those rows, and
  the operator allocates nothing, so this replaces a memset; programs whose
  rows are all kept exit after reading their ids (cheap without an expert map).
fp8_amax_partial_kernel + fp8_scale_from_amax_kernel: dynamic per-tensor fp8
  scale = max(max|x|, 1e-10) / 448 in two launches (partial maxima, then one
  program), deterministic and without atomics, so no buffer needs zeroing.
fp8_dynamic_quant_small_kernel: the whole dynamic per-tensor quantization (scale
  and q) in one program, for decode-sized x (the operator routes inputs of at
  most configs.DYNAMIC_QUANT_ONE_PROGRAM elements here: one launch instead of three).

Constexprs
  zero_dropped_rows_kernel
    functional: buf dtype (fp16/bf16/fp32, pointer type), HAS_EXPERT_MAP.
    tuning:     BLOCK_R (rows per program), BLOCK_C (columns per store), num_warps.
    grid:       (cdiv(rows, BLOCK_R), 1, 1)
    default:    BLOCK_R=4, BLOCK_C=1024, num_warps=4 (sm_80 and sm_90).
  fp8_amax_partial_kernel
    functional: x dtype (fp16/bf16/fp32). num_partials is a RUNTIME argument
                (the operator sizes the partials buffer with it).
    tuning:     BLOCK_M, BLOCK_K, num_warps.
    grid:       (num_partials, 1, 1)
    default:    BLOCK_M=2, BLOCK_K=1024, num_warps=4.
  fp8_scale_from_amax_kernel
    functional: partials dtype (fp32 only; the pointer type).
    tuning:     BLOCK, num_warps.   grid: (1, 1, 1)   default: BLOCK=1024, num_warps=4.
  fp8_dynamic_quant_small_kernel
    functional: x dtype (fp16/bf16/fp32).
    tuning:     BLOCK_K, num_warps.   grid: (1, 1, 1)   default: BLOCK_K=2048, num_warps=8.
16-byte hints (AOT): buf_ptr, cols, stride_row; x_ptr, K, stride_xm (with an
unaligned variant).
"""
import triton
import triton.language as tl

from .align import _local_ids

FP8_MAX = tl.constexpr(448.0)
SCALE_FLOOR = tl.constexpr(1e-10)


@triton.jit
def zero_dropped_rows_kernel(buf_ptr, topk_ids_ptr, expert_map_ptr, rows, cols, stride_row,
                             num_experts, expert_map_len, HAS_EXPERT_MAP: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """buf[r, :] = 0 for every slot r that moe_align drops.

    buf_ptr        [rows, cols] fp16/bf16/fp32, row stride stride_row, columns contiguous
    topk_ids_ptr   int32 [rows] (the flattened [M, topk] ids)
    expert_map_ptr int32 [E_global] (unused unless HAS_EXPERT_MAP)
    rows, cols, stride_row, num_experts (local), expert_map_len (E_global): i32
    """
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    # The same lookup as moe_align, so both agree on which slots are dropped.
    ids = _local_ids(topk_ids_ptr, expert_map_ptr, r, rows, num_experts, expert_map_len, HAS_EXPERT_MAP)
    dropped = (r < rows) & (ids < 0)
    if tl.max(dropped.to(tl.int32), axis=0) == 0:
        return
    base = buf_ptr + r.to(tl.int64)[:, None] * stride_row
    zeros = tl.zeros([BLOCK_R, BLOCK_C], buf_ptr.dtype.element_ty)
    for c0 in range(0, cols, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        tl.store(base + c[None, :], zeros, mask=dropped[:, None] & (c < cols)[None, :])


@triton.jit
def fp8_amax_partial_kernel(x_ptr, partial_ptr, M, K, stride_xm, num_partials,
                            BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """partial[pid] = max |x| over row blocks pid, pid + num_partials, ...

    x_ptr       [M, K] fp16/bf16/fp32, row stride stride_xm, K contiguous
    partial_ptr fp32 [num_partials] out (0 for a program with no rows)
    M, K, stride_xm, num_partials: i32
    """
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    cols = tl.arange(0, BLOCK_K)
    for r0 in range(pid * BLOCK_M, M, num_partials * BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ptr = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
        for k0 in range(0, K, BLOCK_K):
            k = k0 + cols
            x = tl.load(row_ptr + k[None, :], mask=(rows < M)[:, None] & (k < K)[None, :], other=0.0)
            acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
    tl.store(partial_ptr + pid, tl.max(tl.max(acc, axis=1), axis=0))


@triton.jit
def fp8_scale_from_amax_kernel(partial_ptr, scale_ptr, num_partials, BLOCK: tl.constexpr):
    """scale[0] = max(max(partial), 1e-10) / 448 (IEEE division, as the quant kernels).

    partial_ptr fp32 [num_partials]; scale_ptr fp32 [1] out; num_partials: i32
    """
    m = tl.zeros([BLOCK], tl.float32)
    for s in range(0, num_partials, BLOCK):
        o = s + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.load(partial_ptr + o, mask=o < num_partials, other=0.0))
    amax = tl.max(m, axis=0)
    tl.store(scale_ptr, tl.div_rn(tl.maximum(amax, SCALE_FLOOR), FP8_MAX))


@triton.jit
def fp8_dynamic_quant_small_kernel(x_ptr, q_ptr, scale_ptr, M, K, stride_xm, stride_qm, BLOCK_K: tl.constexpr):
    """scale[0] = max(max |x|, 1e-10) / 448 and q = clamp(x / scale, -448, 448) in one
    program: the same IEEE divisions as the three-launch path (amax partials, scale,
    per_tensor_quant_fp8_kernel), so the same bits. Reads x twice (the second from L2).
    H200 (bench/experiments/moe_decode_kernels.py, DeepSeek-like fp8 M=1: x of 7168
    and 8 x 2048): 11.7 us for both quantizations, where the three launches took 14.0
    us; a flat-index form (one tile over rows, an integer division per element) took
    17.3 us: the divisions, issued by one SM, cost more than the round trips they save.

    x_ptr     [M, K] fp16/bf16/fp32, row stride stride_xm, K contiguous
    q_ptr     [M, K] fp8e4nv out, row stride stride_qm, K contiguous
    scale_ptr fp32 [1] out
    M, K, stride_xm, stride_qm: i32
    """
    cols = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_K], tl.float32)
    for m in range(0, M):
        row = x_ptr + tl.cast(m, tl.int64) * stride_xm
        for k0 in range(0, K, BLOCK_K):
            x = tl.load(row + k0 + cols, mask=k0 + cols < K, other=0.0)
            acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
    scale = tl.div_rn(tl.maximum(tl.max(acc, axis=0), SCALE_FLOOR), FP8_MAX)
    tl.store(scale_ptr, scale)
    for m in range(0, M):
        row = x_ptr + tl.cast(m, tl.int64) * stride_xm
        out = q_ptr + tl.cast(m, tl.int64) * stride_qm
        for k0 in range(0, K, BLOCK_K):
            x = tl.load(row + k0 + cols, mask=k0 + cols < K, other=0.0).to(tl.float32)
            q = tl.clamp(tl.div_rn(x, scale), -FP8_MAX, FP8_MAX)
            tl.store(out + k0 + cols, q.to(q_ptr.dtype.element_ty), mask=k0 + cols < K)
