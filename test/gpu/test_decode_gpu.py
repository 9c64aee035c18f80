"""aotriton.flash_attn_with_kvcache on the GPU: contiguous and paged caches
with random block tables, append on/off, seqlen_q 1..8, GQA, forced and
automatic split-KV, against a float64 reference with flash-attn's criterion
(error at most twice that of the same math in the low-precision dtype); bad
inputs; sliding window, softcap and ALiBi; the kernels' masking of bad
indices; CUDA graphs; torch.compile."""
import math

import pytest
import torch

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")

DEV = "cuda"
F16, BF16 = torch.float16, torch.bfloat16


def ref_attn(q, keys, vals, scale, causal, window=(-1, -1), softcap=0.0, slopes=None, lowp=False):
    """q [Sq, Hq, D], keys/vals [Sk, Hk, D] -> (out [Sq, Hq, D], lse [Hq, Sq]).
    float64, or with lowp the same math in q's dtype (flash-attn's out_pt: the
    error budget). flash-attn's semantics: bottom-right causal and window,
    softcap on the scaled scores, ALiBi -slope * |i + Sk - Sq - j| (slopes [Hq])."""
    sq, hq = q.shape[0], q.shape[1]
    sk, g = keys.shape[0], q.shape[1] // keys.shape[1]
    wt = q.dtype if lowp else torch.float64
    qt = q.to(wt).transpose(0, 1)
    kt = keys.to(wt).repeat_interleave(g, 1).transpose(0, 1)
    vt = vals.to(wt).repeat_interleave(g, 1).transpose(0, 1)
    s = (qt @ kt.transpose(-1, -2)).to(torch.float32 if lowp else torch.float64) * scale
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(sk, device=q.device)[None, :]
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        s = s - slopes.to(s.dtype)[:, None, None] * (i + sk - sq - j).abs()
    hidden = torch.zeros(sq, sk, dtype=torch.bool, device=q.device)
    if causal:
        hidden |= j > i + sk - sq
    if window[0] >= 0:
        hidden |= j < i + sk - sq - window[0]
    if window[1] >= 0:
        hidden |= j > i + sk - sq + window[1]
    s = s.masked_fill(hidden, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return (p.to(wt) @ vt).transpose(0, 1), lse


class Cache:
    def __init__(self, B, cap, hk, d, dtype, page):
        self.page = page
        if page is None:
            self.k = torch.randn(B, cap, hk, d, device=DEV).to(dtype)
            self.v = torch.randn(B, cap, hk, d, device=DEV).to(dtype)
            self.block_table = None
        else:
            mb = cap // page
            nb = B * mb + 5
            self.k = torch.randn(nb, page, hk, d, device=DEV).to(dtype)
            self.v = torch.randn(nb, page, hk, d, device=DEV).to(dtype)
            self.block_table = torch.randperm(nb, device=DEV)[:B * mb].view(B, mb).to(torch.int32)

    def seq(self, t, b, n):
        """Sequence b's first n tokens, [1, n, Hk, D]."""
        if self.page is None:
            return t[b:b + 1, :n]
        idx = torch.arange(n, device=DEV)
        return t[self.block_table[b, idx // self.page].long(), idx % self.page][None]


def check_case(B, sq, hq, hk, d, cap, page, seqlens, new, causal, splits, dtype, seed=0, window=(-1, -1),
               softcap=0.0, alibi=False):
    torch.manual_seed(seed)
    c = Cache(B, cap, hk, d, dtype, page)
    q = torch.randn(B, sq, hq, d, device=DEV).to(dtype)
    kn = torch.randn(B, new, hk, d, device=DEV).to(dtype) if new else None
    vn = torch.randn(B, new, hk, d, device=DEV).to(dtype) if new else None
    cs = torch.tensor(seqlens, dtype=torch.int32, device=DEV)
    slopes = torch.rand(B, hq, device=DEV) * 0.3 if alibi else None
    k0, v0 = c.k.clone(), c.v.clone()
    scale = 1.0 / math.sqrt(d)
    out, lse = aotriton.flash_attn_with_kvcache(q, c.k, c.v, kn, vn, cache_seqlens=cs, block_table=c.block_table,
                                                softmax_scale=scale, causal=causal, window_size=window,
                                                softcap=softcap, alibi_slopes=slopes, num_splits=splits,
                                                return_softmax_lse=True)
    torch.cuda.synchronize()
    for b in range(B):
        n = seqlens[b] + new
        if new:
            want_k = torch.cat([Cache.seq(c, k0, b, seqlens[b]), kn[b:b + 1]], 1)
            assert torch.equal(c.seq(c.k, b, n), want_k)
            assert torch.equal(c.seq(c.v, b, n)[:, seqlens[b]:], vn[b:b + 1])
        keys, vals = c.seq(c.k, b, n)[0], c.seq(c.v, b, n)[0]
        sl = None if slopes is None else slopes[b]
        ref, ref_lse = ref_attn(q[b], keys, vals, scale, causal, window, softcap, sl)
        low, _ = ref_attn(q[b], keys, vals, scale, causal, window, softcap, sl, lowp=True)
        budget = (low.double() - ref).abs().max().item()
        assert torch.isfinite(out[b]).all()
        err = (out[b].double() - ref).abs().max().item()
        assert err <= 2 * budget + 1e-5, f"b={b}: error {err} > 2 x {budget}"
        torch.testing.assert_close(lse[b].double(), ref_lse, atol=1e-3, rtol=1e-3)


# (B, Sq, Hq, Hk, D, capacity, page, new, causal, splits); cache_seqlens drawn per case incl. 0 and full
GRID = []
for i, (page, sq, new, causal, splits, (hq, hk), d) in enumerate(
        [(p, s, n, c, sp, h, dd)
         for p in (None, 16, 48, 64, 256) for s in (1, 2, 4, 8) for n in (0, 1) for c in (False, True)
         for sp in (0, 1, 3) for h in ((32, 4),) for dd in (128,) if p != 48 or s in (1, 4)]):
    GRID.append((page, sq, new, causal, splits, (hq, hk), d))


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("page,sq,new,causal,splits,heads,d", GRID)
def test_decode_grid(page, sq, new, causal, splits, heads, d, dtype):
    hq, hk = heads
    cap = 480 if page == 48 else 512  # whole pages
    seqlens = [0, cap - sq * new, 37, 300]  # empty, full after the append, short, long
    check_case(4, sq, hq, hk, d, cap, page, seqlens, new * sq, causal, splits, dtype)


@pytest.mark.parametrize("d", [64, 72, 128, 256])
@pytest.mark.parametrize("heads", [(4, 4), (8, 1), (16, 2), (12, 4)])
def test_decode_head_dims_and_groups(d, heads):
    hq, hk = heads
    check_case(3, 2, hq, hk, d, 256, 64, [255, 1, 100], 1, True, 0, F16)


def test_decode_long_context_auto_split():
    """Batch 1, 4 kv heads, 32k context: the dispatcher splits; every split adds up."""
    check_case(1, 1, 32, 4, 128, 32768, 256, [32767], 1, False, 0, BF16)


def test_bad_inputs_raise():
    c = Cache(2, 64, 2, 64, F16, 16)
    q = torch.randn(2, 1, 8, 64, device=DEV, dtype=F16)
    cs = torch.tensor([10, 20], dtype=torch.int32, device=DEV)
    bad = c.block_table.clone()
    bad[1, 0] = c.k.shape[0]
    with pytest.raises(ValueError, match="block_table row 1"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, cache_seqlens=cs, block_table=bad, check_inputs=True)
    kn = torch.randn(2, 5, 2, 64, device=DEV, dtype=F16)
    with pytest.raises(ValueError, match="too small for the append"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, kn, kn.clone(), cache_seqlens=torch.tensor(
            [60, 0], dtype=torch.int32, device=DEV), block_table=c.block_table, check_inputs=True)
    with pytest.raises(ValueError, match="too small for the append"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, torch.randn(2, 65, 2, 64, device=DEV, dtype=F16),
                                         torch.randn(2, 65, 2, 64, device=DEV, dtype=F16), cache_seqlens=cs,
                                         block_table=c.block_table, check_inputs=False)
    k8 = torch.randn(10, 8, 2, 64, device=DEV, dtype=F16)
    with pytest.raises(ValueError, match="multiple of 16"):
        aotriton.flash_attn_with_kvcache(q, k8, k8.clone(), cache_seqlens=cs,
                                         block_table=torch.zeros(2, 4, dtype=torch.int32, device=DEV))
    with pytest.raises(ValueError, match="cache_seqlens\\[0\\]"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, cache_seqlens=torch.tensor([-1, 3], dtype=torch.int32,
                                                                                  device=DEV),
                                         block_table=c.block_table, check_inputs=True)
    with pytest.raises(ValueError, match="window_size"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, cache_seqlens=cs, block_table=c.block_table,
                                         window_size=(-3, 0))
    with pytest.raises(NotImplementedError, match="together"):
        aotriton.flash_attn_with_kvcache(q, c.k, c.v, cache_seqlens=cs, block_table=c.block_table, softcap=30.0,
                                         alibi_slopes=torch.ones(8, device=DEV))


# (window, causal, softcap, alibi): windows of 0, inside and larger than the sequence, with the score mods.
FEATURES = [((0, 0), False, 0.0, False), ((0, -1), True, 0.0, False), ((64, 0), False, 0.0, False),
            ((100, -1), True, 0.0, False), ((8, 8), False, 0.0, False), ((5000, 5000), False, 0.0, False),
            ((-1, -1), False, 30.0, False), ((-1, -1), True, 50.0, False), ((128, 0), False, 50.0, False),
            ((-1, -1), False, 0.0, True), ((-1, -1), True, 0.0, True), ((32, -1), True, 0.0, True)]


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("page", [None, 16, 256])
@pytest.mark.parametrize("splits", [1, 0, 5])
@pytest.mark.parametrize("window,causal,softcap,alibi", FEATURES, ids=str)
def test_decode_features(window, causal, softcap, alibi, splits, page, dtype):
    check_case(3, 4, 16, 2, 128, 512, page, [300, 0, 508], 4, causal, splits, dtype, window=window,
               softcap=softcap, alibi=alibi)


@pytest.mark.parametrize("page", [48, 16, 64], ids=["per_key", "page_steps", "page_tiles"])
def test_unchecked_bad_indices_are_masked(page):
    """check_inputs=False: an out-of-range page is left out, a too-large
    cache_seqlens is clamped to the capacity (no out-of-bounds access); per key,
    per key with whole pages per tile (PAGE_TILES 2, pages of 16) and per tile
    (PAGE_TILES 1, pages of 64)."""
    c = Cache(2, 4 * page, 1, 64, F16, page)
    q = torch.randn(2, 1, 4, 64, device=DEV, dtype=F16)
    good = c.block_table.clone()
    c.block_table[0, 2] = -7
    cs = torch.tensor([4 * page, 1000], dtype=torch.int32, device=DEV)
    out = aotriton.flash_attn_with_kvcache(q, c.k, c.v, cache_seqlens=cs, block_table=c.block_table,
                                           softmax_scale=0.125, check_inputs=False)
    idx = torch.arange(4 * page, device=DEV)
    for b in range(2):
        keep = (idx // page != 2) if b == 0 else torch.ones_like(idx, dtype=torch.bool)
        pages = good[b, idx // page].long()
        keys = c.k[pages, idx % page][keep]
        vals = c.v[pages, idx % page][keep]
        ref, _ = ref_attn(q[b], keys, vals, 0.125, False)
        assert (out[b].double() - ref).abs().max().item() < 2e-3


def test_cuda_graph_replay():
    """Captured once (workspace from torch's allocator), replayed with new
    cache_seqlens and appended tokens: same as eager."""
    c = Cache(2, 256, 2, 128, BF16, 64)
    q = torch.randn(2, 1, 16, 128, device=DEV, dtype=BF16)
    kn, vn = torch.randn(2, 1, 2, 128, device=DEV, dtype=BF16), torch.randn(2, 1, 2, 128, device=DEV, dtype=BF16)
    cs = torch.tensor([10, 100], dtype=torch.int32, device=DEV)
    aotriton.flash_attn_with_kvcache(q, c.k, c.v, kn, vn, cache_seqlens=cs, block_table=c.block_table,
                                     num_splits=4)  # warm-up loads the modules
    k_eager, v_eager = c.k.clone(), c.v.clone()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = aotriton.flash_attn_with_kvcache(q, c.k, c.v, kn, vn, cache_seqlens=cs, block_table=c.block_table,
                                               num_splits=4)
    cs.copy_(torch.tensor([50, 200], dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    want = aotriton.flash_attn_with_kvcache(q, k_eager, v_eager, kn, vn, cache_seqlens=cs,
                                            block_table=c.block_table, num_splits=4)
    assert torch.equal(out, want)
    assert torch.equal(c.k, k_eager) and torch.equal(c.v, v_eager)


def test_torch_compile_fullgraph():
    c = Cache(2, 128, 2, 64, F16, None)
    q = torch.randn(2, 2, 8, 64, device=DEV, dtype=F16)
    cs = torch.tensor([5, 90], dtype=torch.int32, device=DEV)

    def step(q, kc, vc, cs):
        return aotriton.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, causal=True) * 2

    want = step(q, c.k, c.v, cs)
    got = torch.compile(step, fullgraph=True)(q, c.k, c.v, cs)
    torch._dynamo.reset()
    assert torch.equal(got, want)
