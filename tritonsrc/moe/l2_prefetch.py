"""A decode GEMM's first weight tiles into L2 before its grid dependency wait.

Under programmatic dependent launch (tritonsrc/pdl.py) a GEMM's programs become resident while
the kernel before it still runs (the activation's quantization before GEMM1, act_and_mul or its
quantization before GEMM2) and wait in griddepcontrol.wait: HBM idles for that kernel's few
microseconds. The weights are inputs of the whole call, not the predecessor's output, so a
program can ask L2 for its first tiles of them before it waits. These are hints only:
prefetch.global.L2 returns no data; an expert id outside [0, num_experts), read before the wait,
prefetches nothing, and the offsets are clamped into the weight row, so a stale or not yet written
id costs bandwidth, never a wrong result or an address outside the weights. The kernels call it only
where the id is final when they start (docs/notes-moe-perf.md, "weights into L2 before the wait").
"""
import triton
import triton.language as tl

from ..pdl import hint_l2
from .expert_tiles import grouped_tile

L2_PREFETCH_BYTES = tl.constexpr(32768)  # per program: ~17 MB over 528 resident programs, ~4 us of HBM


@triton.jit
def weight_tile_lines(expert, pid_n, N, stride_be_bytes, stride_bn_bytes, row_bytes, first_byte,
                      BLOCK_SIZE_N: tl.constexpr, TILE_ROW_BYTES: tl.constexpr):
    """Byte offsets (int64 [BLOCK_SIZE_N, lines]) into the weights of one 128-byte line each:
    rows pid_n * BLOCK_SIZE_N .. + BLOCK_SIZE_N (mod N, N >= 1) of `expert`, bytes [first_byte,
    first_byte + n * TILE_ROW_BYTES) of each row (n tiles making up about L2_PREFETCH_BYTES),
    clamped into [0, row_bytes). Strides and row_bytes in bytes, int64 (bytes of an expert may
    pass 2^31 where its elements do not)."""
    TILES: tl.constexpr = max(1, L2_PREFETCH_BYTES // (BLOCK_SIZE_N * TILE_ROW_BYTES))
    LINES: tl.constexpr = max(1, TILES * TILE_ROW_BYTES // 128)
    rows = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    cols = tl.maximum(tl.minimum(first_byte + tl.arange(0, LINES) * 128, row_bytes - 1), 0)
    return expert * stride_be_bytes + rows.to(tl.int64)[:, None] * stride_bn_bytes + cols[None, :]


@triton.jit
def prefetch_weight_tiles(b_ptr, expert_ids_ptr, num_tokens_post_padded_ptr, EM, N, K, stride_be_bytes,
                          stride_bn_bytes, row_bytes, num_experts, BLOCK_SIZE_M: tl.constexpr,
                          BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr,
                          SPLIT_K: tl.constexpr, TILE_ROW_BYTES: tl.constexpr):
    """Before the dependency wait of a grouped GEMM program (its tile as grouped_tile orders it,
    its split's first K tile; TILE_ROW_BYTES: bytes of a weight row per K tile): hints L2 to
    fetch weight_tile_lines of its block's expert. Nothing for a block past the padded slot
    count, an expert id outside [0, num_experts), N or K of 0. sm_90 PTX: compiled only where
    the kernel runs under PDL."""
    pid_m, pid_n = grouped_tile(EM, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    if (pid_m * BLOCK_SIZE_M < tl.load(num_tokens_post_padded_ptr)) & (N > 0) & (K > 0):
        expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
        if (expert >= 0) & (expert < num_experts):
            first_byte = 0
            if SPLIT_K > 1:
                first_byte = tl.program_id(1) * tl.cdiv(tl.cdiv(K, BLOCK_SIZE_K), SPLIT_K) * TILE_ROW_BYTES
            lines = weight_tile_lines(expert, pid_n, N, stride_be_bytes, stride_bn_bytes, row_bytes, first_byte,
                                      BLOCK_SIZE_N, TILE_ROW_BYTES)
            hint_l2(b_ptr.to(tl.pointer_type(tl.int8)) + lines)
