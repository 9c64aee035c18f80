"""The dropout RNG index stays unique past 2^32 elements (keep_mask, interpreter).

The old index folded (batch * head) into a 32-bit Philox offset, so once
seqlen_q * seqlen_k reached 2^32 neighbouring heads drew the same mask, and a
long sequence repeated its own. These tests evaluate keep_mask at those large
logical offsets directly: no big tensors needed.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import pytest
import torch
import triton
import triton.language as tl

from tritonsrc.flash.dropout import keep_mask

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

P = 0.5
TILE = 32


@triton.jit
def _tile_probe(out, seed_ptr, off_ptr, bh, m0, n0, max_sq, max_sk, p, B: tl.constexpr):
    m = m0 + tl.arange(0, B)
    n = n0 + tl.arange(0, B)
    keep = keep_mask(tl.load(seed_ptr), tl.load(off_ptr), bh, m, n, max_sq, max_sk, p)
    tl.store(out + tl.arange(0, B)[:, None] * B + tl.arange(0, B)[None, :], keep.to(tl.int8))


@triton.jit
def _rand_probe(out, seed, x0, p, B: tl.constexpr):
    x = x0 + tl.arange(0, B)[:, None] * B + tl.arange(0, B)[None, :]
    keep = tl.rand(seed, x) > p
    tl.store(out + tl.arange(0, B)[:, None] * B + tl.arange(0, B)[None, :], keep.to(tl.int8))


def tile(bh, m0, n0, max_sq, max_sk, seed=1234, offset=0):
    out = torch.full((TILE, TILE), 7, dtype=torch.int8)
    _tile_probe[(1,)](out, torch.tensor([seed]), torch.tensor([offset]), bh, m0, n0, max_sq, max_sk, P, B=TILE)
    assert ((out == 0) | (out == 1)).all()
    return out


def test_heads_differ_when_plane_reaches_2_pow_32():
    # 65536 x 65536 = 2^32 elements per head: the old 32-bit index of head 1
    # wrapped onto head 0 exactly.
    s = 1 << 16
    for m0, n0 in [(0, 0), (s - TILE, s - TILE), (12345, 777)]:
        h0, h1 = tile(0, m0, n0, s, s), tile(1, m0, n0, s, s)
        assert not torch.equal(h0, h1), (m0, n0)
    # ...and with a base offset that puts the planes across the 2^32 boundary.
    assert not torch.equal(tile(0, 0, 0, s, s, offset=(1 << 32) - 5), tile(1, 0, 0, s, s, offset=(1 << 32) - 5))


def test_no_wrap_inside_one_head():
    # Row 2^16 of a 2^16-wide plane starts at element 2^32: the old index
    # wrapped it onto row 0. Also the first rows past 2^32 at an odd width.
    s = 1 << 16
    assert not torch.equal(tile(3, 0, 0, 2 * s, s), tile(3, s, 0, 2 * s, s))
    w = 100_003
    m_wrap = (1 << 32) // w + 1  # first row whose start is past 2^32
    x = m_wrap * w - (1 << 32)   # ...it starts x elements past it: old index x
    assert not torch.equal(tile(0, m_wrap, 0, m_wrap + TILE, w), tile(0, 0, x, m_wrap + TILE, w))


def test_large_offsets_keep_the_rate():
    s = 1 << 16
    keep = torch.stack([tile(bh, 50_000, 60_000, s, s, seed=bh + 9) for bh in range(6)]).float()
    n = keep.numel()
    assert abs(keep.mean().item() - (1 - P)) < 6 * (P * (1 - P) / n) ** 0.5


def test_head_zero_is_tl_rand_of_the_linear_index():
    # The documented stream: for bh = 0 and x < 2^32, keep = tl.rand(seed, x) > p.
    for m0, offset in [(0, 0), (7, 123_456)]:
        got = tile(0, m0, 0, 100, TILE, seed=77, offset=offset)
        want = torch.full((TILE, TILE), 7, dtype=torch.int8)
        _rand_probe[(1,)](want, 77, offset + m0 * TILE, P, B=TILE)
        assert torch.equal(got, want), m0
