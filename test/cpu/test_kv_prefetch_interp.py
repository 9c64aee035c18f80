"""tritonsrc/flash/kv_prefetch.py under the interpreter: the K/V lines a decode program asks L2
for before its grid dependency wait are those of its split's first keys, clamped into [lo, hi),
inside the cache (paged: through the block table, an entry outside [0, num_blocks) read as block
0) and inside each row's first head_dim elements."""
import pytest
import torch
import triton
import triton.language as tl

from tritonsrc.flash.kv_prefetch import key_row_lines


@triton.jit
def _lines_kernel(k_out, v_out, table, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn, stride_vz,
                  stride_vn, BLOCK_DMODEL: tl.constexpr, ELEM_BYTES: tl.constexpr, PAGED: tl.constexpr,
                  KEYS: tl.constexpr, LINES: tl.constexpr):
    k, v = key_row_lines(table, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn, stride_vz, stride_vn,
                         BLOCK_DMODEL, ELEM_BYTES, PAGED, KEYS)
    offs = tl.arange(0, KEYS)[:, None] * LINES + tl.arange(0, LINES)[None, :]
    tl.store(k_out + offs, k)
    tl.store(v_out + offs, v)


@pytest.mark.parametrize("paged,page_size,lo,hi,head_dim,block_d,elem", [
    (False, 0, 0, 100, 128, 128, 2),     # contiguous, 64 keys from 0
    (False, 0, 960, 1000, 120, 128, 2),  # fewer keys left than prefetched: clamped to hi - 1; head_dim < bucket
    (True, 16, 40, 300, 128, 128, 2),    # vLLM's page 16: keys cross pages, one entry invalid
    (True, 64, 128, 129, 64, 64, 4),     # one key left, fp32 lines of 32 elements
    (True, 16, 300, 300, 128, 128, 2),   # an empty split: row hi - 1 only
])
def test_lines_are_the_split_rows_in_the_cache(paged, page_size, lo, hi, head_dim, block_d, elem):
    keys = 64
    line = 128 // elem
    lines = max(1, block_d // line)
    stride_kn, stride_kz = 4 * head_dim, 4 * head_dim * max(page_size, 1) + 8  # 4 kv heads; padded blocks
    stride_vn, stride_vz = 4 * head_dim + 16, (4 * head_dim + 16) * max(page_size, 1)
    num_blocks = 40
    gen = torch.Generator().manual_seed(lo)
    table = torch.randint(0, num_blocks, (64, ), generator=gen, dtype=torch.int32)
    if paged:
        table[(lo + 3) // page_size] = num_blocks + 5  # an invalid entry among the split's pages
    k_out = torch.full((keys, lines), -1, dtype=torch.int64)
    v_out = torch.full((keys, lines), -1, dtype=torch.int64)
    _lines_kernel[(1, )](k_out, v_out, table, lo, hi, head_dim, page_size, num_blocks, stride_kz, stride_kn,
                         stride_vz, stride_vn, BLOCK_DMODEL=block_d, ELEM_BYTES=elem, PAGED=paged, KEYS=keys,
                         LINES=lines)
    cols = torch.clamp(lo + torch.arange(keys), max=max(hi - 1, 0))
    d = torch.clamp(torch.arange(lines) * line, max=head_dim - 1)
    for out, sz, sn in ((k_out, stride_kz, stride_kn), (v_out, stride_vz, stride_vn)):
        if paged:
            entry = table[cols // page_size].long()
            blk = torch.where((entry >= 0) & (entry < num_blocks), entry, 0)
            base = blk * sz + (cols % page_size) * sn
        else:
            base = cols * sn
        assert torch.equal(out, base[:, None] + d[None, :])
