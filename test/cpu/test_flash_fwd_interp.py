"""Flash attention forward kernel under the Triton interpreter, against float64 torch."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import math

import pytest
import torch
import triton
import triton.language as tl

from tritonsrc.flash.dropout import keep_mask
from python.jit.flash_fwd import attn_fwd_jit

# The interpreter warns on tensor-valued loop bounds and log2(0) (rows with no key).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.float32: dict(atol=2e-5, rtol=2e-5)}


def ref_one(q, k, v, scale, causal_type, keep=None, p=0.0):
    """q (H, Sq, D), k/v (H, Sk, D) float64 -> (o, lse); rows seeing no key: o 0, lse -inf."""
    sq, sk = q.shape[1], k.shape[1]
    s = q @ k.transpose(-1, -2) * scale
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    if causal_type == 1:
        s = s.masked_fill(j > i, -math.inf)
    elif causal_type == 2:
        s = s.masked_fill(j > i + sk - sq, -math.inf)
    lse = torch.logsumexp(s, -1)
    pr = torch.exp(s - lse[..., None])
    pr = torch.nan_to_num(pr, nan=0.0)  # rows with lse = -inf
    if keep is not None:
        pr = pr * keep.double() / (1.0 - p)
    return pr @ v, lse


def expand_kv(k, hq):
    return k.repeat_interleave(hq // k.shape[0], dim=0)


def make(shape, dtype, pad_last=0):
    """Random tensor; pad_last > 0 returns a view with a larger row stride."""
    if pad_last:
        big = torch.randn(*shape[:-1], shape[-1] + pad_last, dtype=torch.float32).to(dtype)
        return big[..., :shape[-1]]
    return torch.randn(*shape, dtype=torch.float32).to(dtype)


def run_batched(b, sq, sk, hq, hk, d, dtype, causal, layout, config=SMALL, pad_last=0, seed=0):
    torch.manual_seed(seed)
    if layout == "bshd":
        q, k, v = make((b, sq, hq, d), dtype, pad_last), make((b, sk, hk, d), dtype, pad_last), \
            make((b, sk, hk, d), dtype, pad_last)
    else:
        q, k, v = make((b, hq, sq, d), dtype, pad_last), make((b, hk, sk, d), dtype, pad_last), \
            make((b, hk, sk, d), dtype, pad_last)
    scale = 1.0 / math.sqrt(d)
    o = torch.full(q.shape, float("nan"), dtype=dtype)
    lse = torch.full((b, hq, sq), float("nan"), dtype=torch.float32)
    o, lse = attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=causal, layout=layout,
                          config=config, out=o, lse_out=lse)
    to_hsd = (lambda x: x.transpose(1, 2)) if layout == "bshd" else (lambda x: x)
    qd, kd, vd, od = (to_hsd(x).double() for x in (q, k, v, o))
    for bi in range(b):
        ro, rl = ref_one(qd[bi], expand_kv(kd[bi], hq), expand_kv(vd[bi], hq), scale, causal)
        torch.testing.assert_close(od[bi], ro, **TOL[dtype])
        torch.testing.assert_close(lse[bi].double(), rl, atol=1e-4, rtol=1e-4)


# Every (seqlen pair, causal kind) for both dtypes; head dim, layout and GQA rotate.
SEQS = [(1, 1), (17, 33), (33, 17), (64, 64), (45, 100)]
HEADS = [(2, 2), (4, 2), (3, 1)]
DIMS = [16, 40, 64, 72, 20]
GRID = []
for n, ((sq, sk), causal, dtype) in enumerate(
        (s, c, t) for s in SEQS for c in (0, 1, 2) for t in (torch.float16, torch.float32)):
    GRID.append((sq, sk, causal, dtype, DIMS[n % len(DIMS)], HEADS[n % len(HEADS)],
                 "bshd" if n % 2 == 0 else "bhsd"))


@pytest.mark.parametrize("sq,sk,causal,dtype,d,heads,layout", GRID)
def test_batched(sq, sk, causal, dtype, d, heads, layout):
    run_batched(2, sq, sk, heads[0], heads[1], d, dtype, causal, layout)


@pytest.mark.parametrize("d", [16, 32, 40, 48, 64, 72, 111, 128])
def test_head_dims(d):
    # 111 takes the head_dim % 8 != 0 path; 40/48/72 the vectorised padded path.
    run_batched(1, 33, 47, 2, 1, d, torch.float16, 2, "bshd")


@pytest.mark.parametrize("bm,bn", [(16, 32), (32, 16), (32, 32)])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_tiles(bm, bn, causal):
    # BLOCK_M != BLOCK_N moves the causal split points; shapes straddle tiles.
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 1}
    run_batched(1, 70, 53, 2, 2, 32, torch.float32, causal, "bshd", config=cfg)
    run_batched(1, 53, 70, 2, 2, 32, torch.float32, causal, "bhsd", config=cfg)


def test_strided_rows():
    # Row stride larger than head_dim (a slice of a wider tensor).
    run_batched(2, 37, 29, 2, 2, 64, torch.float16, 1, "bshd", pad_last=8)
    run_batched(2, 29, 37, 2, 1, 40, torch.float32, 2, "bhsd", pad_last=24)


def varlen_inputs(lens_q, lens_k, hq, hk, d, dtype, seed=0):
    torch.manual_seed(seed)
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    q = make((int(cu_q[-1]), hq, d), dtype)
    k = make((int(cu_k[-1]), hk, d), dtype)
    v = make((int(cu_k[-1]), hk, d), dtype)
    return q, k, v, cu_q, cu_k


@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_varlen(causal, dtype):
    lens_q, lens_k = [5, 1, 17, 0, 40], [9, 3, 17, 4, 22]
    hq, hk, d = 4, 2, 40
    q, k, v, cu_q, cu_k = varlen_inputs(lens_q, lens_k, hq, hk, d, dtype)
    scale = 0.3
    o = torch.full(q.shape, float("nan"), dtype=dtype)
    lse = torch.full((hq, q.shape[0]), float("nan"), dtype=torch.float32)
    o, lse = attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=causal, cu_seqlens_q=cu_q,
                          cu_seqlens_k=cu_k, max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k),
                          config=SMALL, out=o, lse_out=lse)
    for bi in range(len(lens_q)):
        a, e = int(cu_q[bi]), int(cu_q[bi + 1])
        ka, ke = int(cu_k[bi]), int(cu_k[bi + 1])
        if a == e:
            continue
        qd = q[a:e].transpose(0, 1).double()
        kd = expand_kv(k[ka:ke].transpose(0, 1).double(), hq)
        vd = expand_kv(v[ka:ke].transpose(0, 1).double(), hq)
        ro, rl = ref_one(qd, kd, vd, scale, causal)
        torch.testing.assert_close(o[a:e].transpose(0, 1).double(), ro, **TOL[dtype])
        torch.testing.assert_close(lse[:, a:e].double(), rl, atol=1e-4, rtol=1e-4)
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()


def test_no_key_rows():
    # Bottom-right with seqlen_q > seqlen_k: the first rows see nothing -> 0 and -inf.
    torch.manual_seed(3)
    q, k, v = make((1, 40, 1, 16), torch.float32), make((1, 7, 1, 16), torch.float32), \
        make((1, 7, 1, 16), torch.float32)
    o, lse = attn_fwd_jit(q, k, v, sm_scale=0.25, causal_type=2, config=SMALL)
    assert torch.all(o[0, :33] == 0) and torch.all(lse[0, 0, :33] == -math.inf)
    assert torch.all(torch.isfinite(o[0, 33:])) and torch.all(torch.isfinite(lse[0, 0, 33:]))


@triton.jit
def _mask_probe(out, seed_ptr, off_ptr, bh, max_sq, max_sk, p, BM: tl.constexpr, BN: tl.constexpr):
    # Evaluates keep_mask on a whole (max_sq, max_sk) plane: the contract the backward uses.
    m = tl.arange(0, BM)
    n = tl.arange(0, BN)
    keep = keep_mask(tl.load(seed_ptr), tl.load(off_ptr), bh, m, n, max_sq, max_sk, p)
    ok = (m[:, None] < max_sq) & (n[None, :] < max_sk)
    tl.store(out + m[:, None] * max_sk + n[None, :], keep.to(tl.int8), mask=ok)


def probe_mask(seed, offset, bh, sq, sk, p):
    out = torch.full((sq, sk), 7, dtype=torch.int8)
    _mask_probe[(1,)](out, torch.tensor([seed]), torch.tensor([offset]), bh, sq, sk, p,
                      BM=triton.next_power_of_2(sq), BN=triton.next_power_of_2(sk))
    return out


def visible(sq, sk, causal):
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    if causal == 1:
        return j <= i
    if causal == 2:
        return j <= i + sk - sq
    return torch.ones(sq, sk, dtype=torch.bool)


@pytest.mark.parametrize("causal", [0, 2])
def test_dropout_batched(causal):
    torch.manual_seed(5)
    b, sq, sk, hq, hk, d, p = 2, 45, 64, 2, 1, 40, 0.3
    q, k, v = make((b, sq, hq, d), torch.float32), make((b, sk, hk, d), torch.float32), \
        make((b, sk, hk, d), torch.float32)
    seed, offset = torch.tensor([1234567890123], dtype=torch.int64), torch.tensor([77], dtype=torch.int64)
    mask = torch.full((b, hq, sq, sk), 7, dtype=torch.int8)
    o = torch.full(q.shape, float("nan"))
    o, lse, mask = attn_fwd_jit(q, k, v, sm_scale=0.2, causal_type=causal, dropout_p=p, philox_seed=seed,
                                philox_offset=offset, return_mask=True, config=SMALL, out=o, mask_out=mask)
    vis = visible(sq, sk, causal)
    kept = []
    for bi in range(b):
        for h in range(hq):
            m = mask[bi, h]
            assert torch.all((m[vis] == 0) | (m[vis] == 1))
            # Same stream as keep_mask over the whole plane (what the backward regenerates).
            want = probe_mask(int(seed), int(offset), bi * hq + h, sq, sk, p)
            assert torch.equal(m[vis], want[vis])
            kept.append(m[vis].float())
        qd = q[bi].transpose(0, 1).double()
        kd = expand_kv(k[bi].transpose(0, 1).double(), hq)
        vd = expand_kv(v[bi].transpose(0, 1).double(), hq)
        ro, rl = ref_one(qd, kd, vd, 0.2, causal, keep=mask[bi], p=p)
        torch.testing.assert_close(o[bi].transpose(0, 1).double(), ro, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(lse[bi].double(), rl, atol=1e-4, rtol=1e-4)
    frac = torch.cat(kept).mean().item()
    assert abs(frac - (1 - p)) < 0.03, frac

    # Without the debug mask the output is the same; same seed reproduces.
    o2, _ = attn_fwd_jit(q, k, v, sm_scale=0.2, causal_type=causal, dropout_p=p, philox_seed=seed,
                         philox_offset=offset, config=SMALL)
    assert torch.equal(o, o2)
    # A different seed or offset gives a different mask.
    for s2, o_2 in ((seed + 1, offset), (seed, offset + 1)):
        _, _, m2 = attn_fwd_jit(q, k, v, sm_scale=0.2, causal_type=causal, dropout_p=p, philox_seed=s2,
                                philox_offset=o_2, return_mask=True, config=SMALL)
        assert not torch.equal(m2[:, :, vis], mask[:, :, vis])


def test_dropout_varlen_fp16():
    lens_q, lens_k = [5, 1, 17], [9, 30, 17]
    hq, hk, d, p = 2, 1, 16, 0.5
    q, k, v, cu_q, cu_k = varlen_inputs(lens_q, lens_k, hq, hk, d, torch.float16, seed=9)
    msq, msk = max(lens_q), max(lens_k)
    mask = torch.full((3, hq, msq, msk), 7, dtype=torch.int8)
    o, lse, mask = attn_fwd_jit(q, k, v, sm_scale=0.25, causal_type=1, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                max_seqlen_q=msq, max_seqlen_k=msk, dropout_p=p, philox_seed=42,
                                philox_offset=0, return_mask=True, config=SMALL, mask_out=mask)
    for bi in range(3):
        a, e = int(cu_q[bi]), int(cu_q[bi + 1])
        ka, ke = int(cu_k[bi]), int(cu_k[bi + 1])
        sq, sk = e - a, ke - ka
        vis = visible(sq, sk, 1)
        keep = mask[bi, :, :sq, :sk]
        for h in range(hq):
            want = probe_mask(42, 0, bi * hq + h, msq, msk, p)[:sq, :sk]
            assert torch.equal(keep[h][vis], want[vis])
        qd = q[a:e].transpose(0, 1).double()
        kd = expand_kv(k[ka:ke].transpose(0, 1).double(), hq)
        vd = expand_kv(v[ka:ke].transpose(0, 1).double(), hq)
        ro, rl = ref_one(qd, kd, vd, 0.25, 1, keep=keep, p=p)
        torch.testing.assert_close(o[a:e].transpose(0, 1).double(), ro, **TOL[torch.float16])
        torch.testing.assert_close(lse[:, a:e].double(), rl, atol=1e-4, rtol=1e-4)
