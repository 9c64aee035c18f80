"""Decode kernels (kv_append, attn_decode, attn_decode_combine) under the
Triton interpreter, against a float64 torch reference, outputs poisoned."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import math

import pytest
import torch

from python.jit.flash_decode import decode_jit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.float32: dict(atol=2e-5, rtol=2e-5)}
SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}


def reference(q, keys, vals, scale, causal, window=(-1, -1), softcap=0.0, slopes=None):
    """q (Sq, Hq, D), keys/vals (Sk, Hk, D) float64 -> o (Sq, Hq, D), lse (Hq, Sq).
    flash-attn's semantics (bottom-right aligned causal/window, softcap on the
    scaled scores, ALiBi -slope * |i + Sk - Sq - j|, slopes (Hq,)).
    Rows that see no key: o 0, lse -inf."""
    sq, hq = q.shape[0], q.shape[1]
    sk, hk = keys.shape[0], keys.shape[1]
    kx = keys.repeat_interleave(hq // hk, dim=1).transpose(0, 1)  # (Hq, Sk, D)
    vx = vals.repeat_interleave(hq // hk, dim=1).transpose(0, 1)
    s = q.transpose(0, 1) @ kx.transpose(-1, -2) * scale  # (Hq, Sq, Sk)
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        s = s - slopes.double()[:, None, None] * (i + sk - sq - j).abs()
    if causal:
        s = s.masked_fill(j > i + sk - sq, -math.inf)
    if window[0] >= 0:
        s = s.masked_fill(j < i + sk - sq - window[0], -math.inf)
    if window[1] >= 0:
        s = s.masked_fill(j > i + sk - sq + window[1], -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
    return (p @ vx).transpose(0, 1), lse


class Cache:
    """A random cache, contiguous [B, cap, Hk, D] or paged with a random block
    table; `rows(t, b)` gives sequence b's first n tokens as (n, Hk, D)."""

    def __init__(self, B, cap, hk, d, dtype, page=None, gen=None):
        self.page = page
        if page is None:
            self.k = torch.randn(B, cap, hk, d, generator=gen).to(dtype)
            self.v = torch.randn(B, cap, hk, d, generator=gen).to(dtype)
            self.block_table = None
        else:
            max_blocks = cap // page
            num_blocks = B * max_blocks + 3  # spare blocks nobody uses
            self.k = torch.randn(num_blocks, page, hk, d, generator=gen).to(dtype)
            self.v = torch.randn(num_blocks, page, hk, d, generator=gen).to(dtype)
            perm = torch.randperm(num_blocks, generator=gen)[:B * max_blocks]
            self.block_table = perm.view(B, max_blocks).to(torch.int32).contiguous()

    def rows(self, t, b, n):
        if self.page is None:
            return t[b, :n]
        idx = torch.arange(n)
        return t[self.block_table[b, idx // self.page].long(), idx % self.page]


def run_case(B, sq, hq, hk, d, cap, page, seqlens, new, causal, splits, dtype, seed=0, config=SMALL,
             window=(-1, -1), softcap=0.0, alibi=None):
    """alibi: None, "heads" (slopes (Hq,)) or "batch" (slopes (B, Hq))."""
    gen = torch.Generator().manual_seed(seed)
    cache = Cache(B, cap, hk, d, dtype, page, gen)
    k0, v0 = cache.k.clone(), cache.v.clone()
    q = torch.randn(B, sq, hq, d, generator=gen).to(dtype)
    k_new = torch.randn(B, new, hk, d, generator=gen).to(dtype) if new else None
    v_new = torch.randn(B, new, hk, d, generator=gen).to(dtype) if new else None
    cs = torch.tensor(seqlens, dtype=torch.int32)
    scale = 1.0 / math.sqrt(d)
    o = torch.full_like(q, float("nan"))
    lse = torch.full((B, hq, sq), float("nan"), dtype=torch.float32)
    slopes = None
    if alibi == "heads":
        slopes = torch.rand(hq, generator=gen) * 0.5
    elif alibi == "batch":
        slopes = torch.rand(B, hq, generator=gen) * 0.5
    o, lse = decode_jit(q, cache.k, cache.v, cs, sm_scale=scale, k=k_new, v=v_new,
                        block_table=cache.block_table, causal=causal, window_size=window, softcap=softcap,
                        alibi_slopes=slopes, num_splits=splits, config=config, out=o, lse_out=lse)
    if new:
        # The append wrote exactly rows [seqlens[b], seqlens[b] + new) of each sequence.
        for b in range(B):
            ref_k, ref_v = Cache.rows(cache, k0, b, cap).clone(), Cache.rows(cache, v0, b, cap).clone()
            ref_k[seqlens[b]:seqlens[b] + new] = k_new[b]
            ref_v[seqlens[b]:seqlens[b] + new] = v_new[b]
            torch.testing.assert_close(cache.rows(cache.k, b, cap), ref_k, atol=0, rtol=0)
            torch.testing.assert_close(cache.rows(cache.v, b, cap), ref_v, atol=0, rtol=0)
        if page is not None:
            used = set(cache.block_table.flatten().tolist())
            spare = [i for i in range(cache.k.shape[0]) if i not in used]
            assert torch.equal(cache.k[spare], k0[spare]) and torch.equal(cache.v[spare], v0[spare])
    for b in range(B):
        n = seqlens[b] + new
        keys = cache.rows(cache.k, b, n).double()
        vals = cache.rows(cache.v, b, n).double()
        sl = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[b])
        ro, rl = reference(q[b].double(), keys, vals, scale, causal, window, softcap, sl)
        torch.testing.assert_close(o[b].double(), ro, **TOL[dtype])
        torch.testing.assert_close(lse[b].double(), rl, atol=1e-4, rtol=1e-4)


# (B, Sq, Hq, Hk, D, capacity, page, cache_seqlens, new, causal, splits)
CASES = [
    (2, 1, 8, 2, 64, 96, None, [37, 96], 0, False, 1),       # contiguous, one sequence full
    (2, 1, 8, 2, 64, 96, None, [0, 50], 0, False, 3),        # empty cache (O 0, lse -inf), split
    (2, 1, 4, 1, 64, 96, None, [0, 95], 1, False, 1),        # append into an empty and a full-less-one cache
    (2, 4, 8, 2, 64, 128, 16, [13, 100], 4, True, 1),        # speculative, paged 16, causal
    (3, 3, 8, 2, 32, 128, 64, [64, 0, 61], 3, True, 4),      # paged 64, split, causal, padded head (32 in 64)
    (2, 2, 4, 1, 64, 128, 16, [128, 77], 0, True, 5),        # full paged cache, seqlen_q 2, 5 splits
    (1, 4, 4, 1, 64, 64, None, [2, ], 0, True, 2),           # Sq > Sk for some rows: empty rows under causal
    (2, 1, 8, 8, 64, 64, 16, [33, 64], 0, False, 2),         # MHA (no GQA)
    (2, 3, 16, 4, 64, 80, None, [20, 41], 2, False, 2),      # group 4 x 3 tokens = 12 rows, append + split
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c).replace(" ", ""))
def test_decode(case, dtype):
    B, sq, hq, hk, d, cap, page, seqlens, new, causal, splits = case
    run_case(B, sq, hq, hk, d, cap, page, seqlens, new, causal, splits, dtype)


def test_rows_span_several_m_blocks():
    """seqlen_q * group = 32 rows with BLOCK_M 16: two query tiles share the keys."""
    run_case(2, 4, 16, 2, 64, 64, 16, [30, 60], 0, True, 2, torch.float32)


def test_default_config():
    """The rules' default tiles (BLOCK_N 64), causal, paged and split."""
    run_case(2, 2, 8, 2, 64, 256, 64, [200, 131], 2, True, 3, torch.float16, config=None)


@pytest.mark.parametrize("page", [48, 16, 64], ids=["per_key", "page_steps", "page_tiles"])
def test_invalid_block_table_entries_are_left_out(page):
    """Entries outside [0, num_blocks) never address memory: their keys are
    left out of the softmax and the append skips them (per key, per key with
    pages stepped (PAGE_TILES 2), and per tile (PAGE_TILES 1))."""
    gen = torch.Generator().manual_seed(1)
    B, hq, hk, d, cap = 2, 4, 1, 64, 4 * page
    cache = Cache(B, cap, hk, d, torch.float32, page, gen)
    q = torch.randn(B, 1, hq, d, generator=gen)
    good = cache.block_table.clone()
    cache.block_table[0, 1] = -5
    cache.block_table[1, 0] = cache.k.shape[0]  # one past the end
    cs = torch.tensor([2 * page + 8, page + 4], dtype=torch.int32)
    o, lse = decode_jit(q, cache.k, cache.v, cs, sm_scale=0.125, block_table=cache.block_table, config=SMALL)
    for b, bad_page in ((0, 1), (1, 0)):
        idx = torch.arange(int(cs[b]))
        keep = (idx // page) != bad_page
        pages = good[b, idx // page].long()
        keys = cache.k[pages, idx % page][keep].double()
        vals = cache.v[pages, idx % page][keep].double()
        ro, rl = reference(q[b].double(), keys, vals, 0.125, False)
        torch.testing.assert_close(o[b].double(), ro, **TOL[torch.float32])
        torch.testing.assert_close(lse[b].double(), rl, atol=1e-4, rtol=1e-4)


def test_out_of_range_cache_seqlens_are_clamped():
    """cache_seqlens outside [0, capacity - new] are clamped: -3 -> 0, and
    capacity + 9 -> capacity - new (the append lands in the last rows)."""
    gen = torch.Generator().manual_seed(2)
    B, hq, hk, d, cap, new = 2, 4, 2, 64, 48, 2
    cache = Cache(B, cap, hk, d, torch.float32, None, gen)
    q = torch.randn(B, 1, hq, d, generator=gen)
    kn, vn = torch.randn(B, new, hk, d, generator=gen), torch.randn(B, new, hk, d, generator=gen)
    cs = torch.tensor([-3, cap + 9], dtype=torch.int32)
    o, lse = decode_jit(q, cache.k, cache.v, cs, sm_scale=0.125, k=kn, v=vn, config=SMALL)
    assert torch.equal(cache.k[0, :new], kn[0]) and torch.equal(cache.k[1, cap - new:], kn[1])
    for b, n in ((0, new), (1, cap)):
        ro, rl = reference(q[b].double(), cache.k[b, :n].double(), cache.v[b, :n].double(), 0.125, False)
        torch.testing.assert_close(o[b].double(), ro, **TOL[torch.float32])
        torch.testing.assert_close(lse[b].double(), rl, atol=1e-4, rtol=1e-4)


# (window, causal, splits, Sq, new): windows of 0, inside the sequence, larger than it, one-sided.
WINDOWS = [
    ((0, 0), False, 1, 1, 0),
    ((0, -1), True, 3, 4, 2),
    ((16, 0), False, 3, 3, 1),
    ((37, -1), True, 2, 2, 0),
    ((5, 3), False, 4, 4, 0),       # right window: queries see a few keys past their diagonal
    ((1000, 1000), False, 2, 2, 1),  # larger than the sequence: no mask at all
    ((-1, 2), False, 1, 4, 0),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("window,causal,splits,sq,new", WINDOWS, ids=str)
def test_sliding_window(window, causal, splits, sq, new, dtype):
    run_case(2, sq, 8, 2, 64, 128, 16, [100, 7], new, causal, splits, dtype, window=window)


# Pages of 64 run the PAGE_TILES kernel: tiles start at multiples of BLOCK_N
# even where the window starts mid-page (the band start is rounded down).
@pytest.mark.parametrize("block_n", [16, 64])
@pytest.mark.parametrize("window,causal,splits,sq,new", [((16, 0), False, 3, 3, 1), ((37, -1), True, 2, 2, 0),
                                                         ((5, 3), False, 4, 4, 0), ((0, 0), False, 1, 1, 0)],
                         ids=str)
def test_sliding_window_page_tiles(window, causal, splits, sq, new, block_n):
    run_case(2, sq, 8, 2, 64, 256, 64, [200, 71], new, causal, splits, torch.float16, window=window,
             config={"BLOCK_M": 16, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 2})


# Pages of 16 in 64-key tiles (4 pages a tile; the unmasked loop steps them over several
# tiles where the band is long: no window, or one of 150), with and without a window.
@pytest.mark.parametrize("window,causal,splits,sq,new", [((-1, -1), False, 1, 1, 0), ((16, 0), False, 3, 3, 1),
                                                         ((37, -1), True, 2, 2, 0), ((150, -1), True, 1, 2, 1)],
                         ids=str)
def test_sliding_window_page_steps(window, causal, splits, sq, new):
    run_case(2, sq, 8, 2, 64, 256, 16, [200, 71], new, causal, splits, torch.float16, window=window,
             config={"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2})


@pytest.mark.parametrize("softcap", [30.0, 0.5])
@pytest.mark.parametrize("splits", [1, 3])
def test_softcap(softcap, splits):
    # Scores are about N(0, 1): a cap of 0.5 saturates most of them, 30 barely bends them.
    run_case(2, 2, 8, 2, 64, 96, None, [60, 95], 1, True, splits, torch.float32, softcap=softcap)


@pytest.mark.parametrize("alibi", ["heads", "batch"])
@pytest.mark.parametrize("splits,causal,window", [(1, False, (-1, -1)), (3, True, (20, -1))])
def test_alibi(alibi, splits, causal, window):
    run_case(2, 3, 8, 2, 64, 128, 64, [110, 30], 1, causal, splits, torch.float32, alibi=alibi, window=window)


# Tiles of several pages (pages of 16 and 32: PAGE_TILES 2, each key's page
# stepped a tile at a time) and pages of several tiles (PAGE_TILES 1): the
# loops read each tile's block-table entries one iteration ahead.
@pytest.mark.parametrize("block_n,page,seqlens,splits", [(32, 16, [77, 127], 1), (64, 16, [127, 45], 3),
                                                         (32, 32, [95, 64], 2), (64, 32, [127, 33], 3),
                                                         (16, 64, [126, 99], 2), (32, 64, [0, 127], 1),
                                                         (64, 128, [127, 66], 2)], ids=str)
def test_tile_and_page_sizes(block_n, page, seqlens, splits):
    run_case(2, 2, 8, 2, 64, 128, page, seqlens, 1, True, splits, torch.float16,
             config={"BLOCK_M": 16, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 3})


# Pages that are multiples of 16 but not of 64 or powers of two: the per-key
# kernel and the append find a key's page by a multiply-high (kv_cache.page_of).
@pytest.mark.parametrize("block_n,page,splits", [(32, 48, 2), (16, 80, 3), (64, 112, 1)], ids=str)
def test_page_sizes_off_powers_of_two(block_n, page, splits):
    run_case(2, 2, 8, 2, 64, 3 * page, page, [3 * page - 1, page + 5], 1, True, splits, torch.float16,
             config={"BLOCK_M": 16, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 3})


# More splits with keys than the combine reads per chunk (BLOCK_S 64 at D 64,
# 16 at D 256): later chunks rescale what earlier ones summed; the last
# splits saw no key (LSE -inf).
@pytest.mark.parametrize("d,cap,seqlens,splits,dtype", [(64, 2048, [2000], 128, torch.float16),
                                                        (256, 512, [500], 40, torch.float32)], ids=str)
def test_combine_over_several_chunks(d, cap, seqlens, splits, dtype):
    run_case(1, 1, 4, 1, d, cap, None, seqlens, 0, False, splits, dtype)
