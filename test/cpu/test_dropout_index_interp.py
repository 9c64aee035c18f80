"""The dropout RNG index stays unique past 2^32 elements (keep_mask, interpreter).

The old index folded (batch * head) into a 32-bit Philox offset, so once
seqlen_q * seqlen_k reached 2^32 neighbouring heads drew the same mask, and a
long sequence repeated its own. These tests evaluate keep_mask at those large
logical offsets directly (no big tensors needed) and check the stream against
an independent numpy Philox.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import numpy as np
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


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Reference Philox-4x32-10 (Salmon et al. 2011) in numpy, independent of Triton."""
    lo = np.uint64(0xFFFFFFFF)
    c = [np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3)]
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & lo, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & lo]
        k0 = (k0 + np.uint64(0x9E3779B9)) & lo
        k1 = (k1 + np.uint64(0xBB67AE85)) & lo
    return c[0]


def reference_keep(seed, offset, bh, m0, n0, p):
    """The documented stream: word 0 of Philox-4x32-10, key = seed, counter =
    (n, m, bh | hi32(offset) << 16, lo32(offset)), as a uniform float > p."""
    n, m = np.meshgrid(np.arange(n0, n0 + TILE), np.arange(m0, m0 + TILE))
    c2 = np.full_like(n, bh | ((offset >> 32) << 16))
    c3 = np.full_like(n, offset & 0xFFFFFFFF)
    r = philox4x32_10(n, m, c2, c3, seed & 0xFFFFFFFF, seed >> 32).astype(np.uint32).view(np.int32)
    r = np.where(r < 0, -r - 1, r)
    u = r.astype(np.float32) * np.float32(4.6566127342e-10)
    return torch.from_numpy((u > np.float32(p)).astype(np.int8))


@pytest.mark.parametrize("seed,offset,bh,m0,n0", [
    (1234, 0, 0, 0, 0),
    (2**40 + 77, 5, 3, 70_000, 123),
    (99, (7 << 32) + 12345, 65535, (1 << 31) - TILE, (1 << 31) - TILE),
])
def test_stream_is_the_documented_philox_counter(seed, offset, bh, m0, n0):
    got = tile(bh, m0, n0, 1 << 31, 1 << 31, seed=seed, offset=offset)
    assert torch.equal(got, reference_keep(seed, offset, bh, m0, n0, P))


def test_offsets_give_disjoint_streams():
    # Neighbouring offsets used to shift the same stream by one element.
    a = tile(0, 0, 0, 64, 64, offset=0)
    b = tile(0, 0, 0, 64, 64, offset=1)
    assert not torch.equal(a[:, 1:], b[:, :-1]) and not torch.equal(a, b)
