"""Small kernels the AOT fused_experts operator needs besides the main ones.

zero_dropped_rows_kernel: zero the rows of a [rows, cols] buffer whose slot
  (flat index into topk_ids) moe_align drops (expert map -1, or a local id
  outside [0, num_experts)). The grouped GEMM never writes those rows, and
  the operator allocates nothing, so this replaces a memset; programs whose
  rows are all kept exit after reading their ids (cheap without an expert map).
fp8_amax_partial_kernel + fp8_scale_from_amax_kernel: dynamic per-tensor fp8
  scale = max(max|x|, 1e-10) / 448 in two launches (partial maxima, then one
  program), deterministic and without atomics, so no buffer needs zeroing.
fp8_dynamic_amax_chunks_kernel + fp8_dynamic_quant_chunks_kernel: the dynamic
  per-tensor quantization of decode-sized x (at most configs.DYNAMIC_QUANT_MAX_CHUNKS
  row chunks of configs.DYNAMIC_QUANT_CHUNK columns) in two launches of one chunk
  per program, optionally with GEMM1's activation applied on the way in.

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
  fp8_dynamic_amax_chunks_kernel, fp8_dynamic_quant_chunks_kernel
    functional: x dtype (fp16/bf16/fp32), ACTIVATION (-1 none; silu, gelu_tanh for fp16/bf16).
    tuning:     BLOCK_K = configs.DYNAMIC_QUANT_CHUNK (both steps must agree), BLOCK_P
                (partials per load, step 2), num_warps.
    grid:       (max(M * cdiv(K, BLOCK_K), 1), 1, 1)
    default:    num_warps=4. Aligned rows only (16-byte hints).
16-byte hints (AOT): buf_ptr, cols, stride_row; x_ptr, K, stride_xm (with an
unaligned variant).
"""
import triton
import triton.language as tl

from ..pdl import let_successor_start_then_wait, wait_for_predecessor
from .activation import gated_product
from .align import _local_ids, slot_kept

FP8_MAX = tl.constexpr(448.0)
SCALE_FLOOR = tl.constexpr(1e-10)


@triton.jit
def zero_dropped_rows_kernel(buf_ptr, topk_ids_ptr, expert_map_ptr, rows, cols, stride_row,
                             num_experts, expert_map_len, HAS_EXPERT_MAP: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, USE_PDL: tl.constexpr = False):
    """buf[r, :] = 0 for every slot r that moe_align drops.

    buf_ptr        [rows, cols] fp16/bf16/fp32, row stride stride_row, columns contiguous
    topk_ids_ptr   int32 [rows] (the flattened [M, topk] ids)
    expert_map_ptr int32 [E_global] (unused unless HAS_EXPERT_MAP)
    rows, cols, stride_row, num_experts (local), expert_map_len (E_global): i32
    """
    wait_for_predecessor(USE_PDL)
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
                            BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr = False):
    """partial[pid] = max |x| over row blocks pid, pid + num_partials, ...

    x_ptr       [M, K] fp16/bf16/fp32, row stride stride_xm, K contiguous
    partial_ptr fp32 [num_partials] out (0 for a program with no rows)
    M, K, stride_xm, num_partials: i32
    """
    wait_for_predecessor(USE_PDL)
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
def fp8_scale_from_amax_kernel(partial_ptr, scale_ptr, num_partials, BLOCK: tl.constexpr,
                               USE_PDL: tl.constexpr = False):
    """scale[0] = max(max(partial), 1e-10) / 448 (IEEE division, as the quant kernels).

    partial_ptr fp32 [num_partials]; scale_ptr fp32 [1] out; num_partials: i32
    """
    wait_for_predecessor(USE_PDL)
    m = tl.zeros([BLOCK], tl.float32)
    for s in range(0, num_partials, BLOCK):
        o = s + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.load(partial_ptr + o, mask=o < num_partials, other=0.0))
    amax = tl.max(m, axis=0)
    tl.store(scale_ptr, tl.div_rn(tl.maximum(amax, SCALE_FLOOR), FP8_MAX))


@triton.jit
def _row_chunks(ptr, stride_m, c, cols, chunks_per_row, num_chunks, K, BLOCK_K: tl.constexpr):
    """Row pointers [CHUNKS, 1], columns [CHUNKS, BLOCK_K] and mask of a tile of chunk
    ids c: chunk c is columns [j * BLOCK_K, (j + 1) * BLOCK_K) of row c // chunks_per_row
    (j the remainder). One division per chunk, not per element."""
    row = c // chunks_per_row
    k0 = (c - row * chunks_per_row) * BLOCK_K
    k = k0[:, None] + cols[None, :]
    ok = (c < num_chunks)[:, None] & (k < K)
    return ptr + row.to(tl.int64)[:, None] * stride_m, k, ok


@triton.jit
def _chunk_values(x_ptr, stride_xm, c, cols, chunks_per_row, num_chunks, K, BLOCK_K: tl.constexpr,
                  ACTIVATION: tl.constexpr):
    """The tile's values in x's dtype: x itself, or (ACTIVATION >= 0, x [M, 2K] = gate | up)
    act(gate) * up rounded as act_and_mul_kernel stores it."""
    rows, k, ok = _row_chunks(x_ptr, stride_xm, c, cols, chunks_per_row, num_chunks, K, BLOCK_K)
    if ACTIVATION < 0:
        return tl.load(rows + k, mask=ok, other=0.0)
    else:
        return gated_product(rows, k, ok, K, ACTIVATION).to(x_ptr.dtype.element_ty)


@triton.jit
def _quantize_fp8(x, scale, q_ptr, stride_qm, c, cols, chunks_per_row, num_chunks, K, BLOCK_K: tl.constexpr):
    rows, k, ok = _row_chunks(q_ptr, stride_qm, c, cols, chunks_per_row, num_chunks, K, BLOCK_K)
    q = tl.clamp(tl.div_rn(x, scale), -FP8_MAX, FP8_MAX)
    tl.store(rows + k, q.to(q_ptr.dtype.element_ty), mask=ok)


@triton.jit
def fp8_dynamic_amax_chunks_kernel(x_ptr, partial_ptr, topk_ids_ptr, expert_map_ptr, M, K, stride_xm, num_experts,
                                   expert_map_len, ACTIVATION: tl.constexpr, BLOCK_K: tl.constexpr,
                                   USE_PDL: tl.constexpr = False):
    """Step 1 of the decode-sized dynamic per-tensor quantization: partial[c] = max |y|
    over row chunk c (program c: columns [j * BLOCK_K, (j + 1) * BLOCK_K) of row
    c // cdiv(K, BLOCK_K)), y = x, or with ACTIVATION >= 0 y = act(gate) * up of
    x = [gate | up] (activation.py's numbering), rounded to x's dtype as
    act_and_mul_kernel stores it. One chunk per program spreads the work over the
    SMs: the one-program kernel this replaces ran ~1000 instructions per thread on
    one SM whatever the size (9.8 us per quantization on the H200, 2026-12-05).

    x_ptr       [M, K] (ACTIVATION >= 0: [M, 2K]) fp16/bf16/fp32, row stride stride_xm,
                columns contiguous
    partial_ptr fp32 [max(M * cdiv(K, BLOCK_K), 1)] out
    topk_ids_ptr, expert_map_ptr, num_experts, expert_map_len: with ACTIVATION >= 0
                (x is fused_experts' GEMM1 output, a row per slot) a slot moe_align drops
                (align.slot_kept) gives 0: GEMM1 never wrote its row. Unread otherwise.
    M, K, stride_xm, num_experts, expert_map_len: i32
    """
    wait_for_predecessor(USE_PDL)
    c = tl.program_id(0) + tl.arange(0, 1)
    chunks_per_row = tl.cdiv(K, BLOCK_K)
    # Empty x (M or K 0) runs one program with no chunk; the divisor stays nonzero.
    y = _chunk_values(x_ptr, stride_xm, c, tl.arange(0, BLOCK_K), tl.maximum(chunks_per_row, 1), M * chunks_per_row,
                      K, BLOCK_K, ACTIVATION)
    amax = tl.max(tl.abs(y.to(tl.float32)), axis=1)
    if ACTIVATION >= 0:
        row = c // tl.maximum(chunks_per_row, 1)
        kept = slot_kept(topk_ids_ptr, expert_map_ptr, row, num_experts, expert_map_len, mask=row < M)
        amax = tl.where(kept, amax, 0.0)
    tl.store(partial_ptr + c, amax)


@triton.jit
def fp8_dynamic_quant_chunks_kernel(x_ptr, q_ptr, scale_ptr, partial_ptr, M, K, stride_xm, stride_qm,
                                    ACTIVATION: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
                                    USE_PDL: tl.constexpr = False):
    """Step 2: scale = max(max(partial), 1e-10) / 448 (every program reduces the
    partials the same way; program 0 stores it) and q = clamp(y / scale, -448, 448)
    of row chunk c = program c, y recomputed as step 1 has it. The same IEEE
    divisions as the three launches the operator takes for larger x (amax partials,
    scale, per_tensor_quant_fp8_kernel), so the same bits.

    x_ptr, M, K, stride_xm as step 1; q_ptr [M, K] fp8e4nv out, row stride stride_qm,
    K contiguous; scale_ptr fp32 [1] out; partial_ptr step 1's output; stride_qm: i32
    """
    let_successor_start_then_wait(USE_PDL)  # a GEMM comes next; step 1 waited for moe_align (pdl.py)
    c = tl.program_id(0) + tl.arange(0, 1)
    cols = tl.arange(0, BLOCK_K)
    chunks_per_row = tl.cdiv(K, BLOCK_K)
    n = M * chunks_per_row
    chunks_per_row = tl.maximum(chunks_per_row, 1)  # a divisor (empty x: one program, no chunk)
    y = _chunk_values(x_ptr, stride_xm, c, cols, chunks_per_row, n, K, BLOCK_K, ACTIVATION)  # x's dtype
    m = tl.zeros([BLOCK_P], tl.float32)
    for p0 in range(0, n, BLOCK_P):
        o = p0 + tl.arange(0, BLOCK_P)
        m = tl.maximum(m, tl.load(partial_ptr + o, mask=o < n, other=0.0))
    scale = tl.div_rn(tl.maximum(tl.max(m, axis=0), SCALE_FLOOR), FP8_MAX)
    if tl.program_id(0) == 0:
        tl.store(scale_ptr, scale)
    _quantize_fp8(y.to(tl.float32), scale, q_ptr, stride_qm, c, cols, chunks_per_row, n, K, BLOCK_K)
