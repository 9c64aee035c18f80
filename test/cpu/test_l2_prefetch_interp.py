"""tritonsrc/moe/l2_prefetch.py under the interpreter: the lines a decode GEMM asks L2 for
before its grid dependency wait lie inside the expert's rows of its tile and inside each row
(the offsets are clamped, so any K, split or tile size keeps the hints on the weights), and
cover the tile's first K bytes when the row is long enough."""
import pytest
import torch
import triton
import triton.language as tl

from tritonsrc.moe.l2_prefetch import L2_PREFETCH_BYTES, weight_tile_lines


@triton.jit
def _lines_kernel(out_ptr, expert, pid_n, N, stride_be, stride_bn, row_bytes, first_byte,
                  BLOCK_N: tl.constexpr, TILE_ROW_BYTES: tl.constexpr, LINES: tl.constexpr):
    lines = weight_tile_lines(expert, pid_n, N, stride_be, stride_bn, row_bytes, first_byte, BLOCK_N,
                              TILE_ROW_BYTES)
    offs = tl.arange(0, BLOCK_N)[:, None] * LINES + tl.arange(0, LINES)[None, :]
    tl.store(out_ptr + offs, lines)


@pytest.mark.parametrize("block_n,tile_row_bytes,N,row_bytes,first_byte,pid_n", [
    (64, 128, 4096, 14336, 0, 3),          # fp8 GEMM2 tile, unsplit
    (64, 128, 4096, 14336, 3584 * 3, 63),  # its last split, last column tile
    (128, 256, 200, 4096, 0, 1),           # bf16, N not a multiple of the tile: rows wrap
    (64, 128, 4096, 192, 0, 0),            # a row shorter than the prefetch: clamped
    (16, 64, 96, 1024, 1000, 5),           # int4 bytes, first byte near the row's end
])
def test_lines_stay_in_the_tile_rows(block_n, tile_row_bytes, N, row_bytes, first_byte, pid_n):
    tiles = max(1, L2_PREFETCH_BYTES.value // (block_n * tile_row_bytes))
    lines = max(1, tiles * tile_row_bytes // 128)
    expert, stride_bn = 3, row_bytes + 64  # padded rows: the stride, not the row length, steps rows
    stride_be = N * stride_bn
    out = torch.full((block_n, lines), -1, dtype=torch.int64)
    _lines_kernel[(1, )](out, expert, pid_n, N, stride_be, stride_bn, row_bytes, first_byte, BLOCK_N=block_n,
                         TILE_ROW_BYTES=tile_row_bytes, LINES=lines)
    rel = out - expert * stride_be
    row, col = rel // stride_bn, rel % stride_bn
    want_rows = (pid_n * block_n + torch.arange(block_n)) % N
    assert torch.equal(row, want_rows[:, None].expand_as(row))
    assert (col >= 0).all() and (col < row_bytes).all()
    want_cols = torch.clamp(first_byte + torch.arange(lines) * 128, max=row_bytes - 1)
    assert torch.equal(col, want_cols[None, :].expand_as(col))
