"""Flash attention backward kernels under the Triton interpreter.

dq/dk/dv from tritonsrc/flash/bwd_* against float64 torch autograd on fresh
random data. O and LSE come from the float64 reference (not from the forward
kernel). The dropout reference mask comes from the shared keep_mask, called by
a tiny helper kernel with the documented arguments.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from python.jit.flash_bwd import attn_bwd_jit  # noqa: E402
from tritonsrc.flash.dropout import keep_mask  # noqa: E402

TOL = {torch.float16: dict(atol=2e-2, rtol=2e-2), torch.float32: dict(atol=2e-4, rtol=2e-4)}


@triton.jit
def _mask_kernel(Out, seed_ptr, off_ptr, max_seqlen_q, max_seqlen_k, dropout_p,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    keep = keep_mask(tl.load(seed_ptr), tl.load(off_ptr), bh, offs_m, offs_n,
                     max_seqlen_q, max_seqlen_k, dropout_p)
    ptrs = Out + (bh * max_seqlen_q + offs_m[:, None]) * max_seqlen_k + offs_n[None, :]
    ok = (offs_m[:, None] < max_seqlen_q) & (offs_n[None, :] < max_seqlen_k)
    tl.store(ptrs, keep.to(tl.int8), mask=ok)


def dropout_keep(bhq, max_sq, max_sk, p, seed, offset):
    """bool [batch*Hq, max_sq, max_sk]: keep_mask for every (bh, m, n)."""
    out = torch.zeros(bhq, max_sq, max_sk, dtype=torch.int8)
    s = torch.tensor([seed], dtype=torch.int64)
    o = torch.tensor([offset], dtype=torch.int64)
    grid = (bhq, triton.cdiv(max_sq, 16), triton.cdiv(max_sk, 16))
    _mask_kernel[grid](out, s, o, max_sq, max_sk, p, BLOCK_M=16, BLOCK_N=16)
    return out.bool()


def ref_attn(q, k, v, sm_scale, causal_type, keep=None, p=0.0):
    """One sequence, (H, S, D) float64 leaves -> (O, LSE). GQA by repeat."""
    group = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(group, 0)
    v = v.repeat_interleave(group, 0)
    sq, sk = q.shape[1], k.shape[1]
    s = sm_scale * q @ k.transpose(1, 2)
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    if causal_type == 0:
        vis = torch.ones(sq, sk, dtype=torch.bool)
    else:
        vis = j <= i + (0 if causal_type == 1 else sk - sq)
    lse = torch.logsumexp(s.detach().masked_fill(~vis, -math.inf), -1)
    # Rows that see no key: softmax of zeros times an all-False mask -> 0,
    # without NaN in the graph.
    row_any = vis.any(-1, keepdim=True)
    s_safe = torch.where(vis | ~row_any, s, -math.inf)
    prob = torch.softmax(s_safe, -1) * vis
    if keep is not None:
        prob = prob * keep / (1.0 - p)
    return prob @ v, lse


def make_case(B, sq, sk, hq, hk, d, dtype, causal_type=0, layout="bshd",
              varlen=None, dropout_p=0.0, seed=0):
    """Random inputs, reference grads, and the kernel's arguments.

    varlen: (lens_q, lens_k) lists; then B = len(lens_q) and sq/sk unused.
    Returns (kwargs for attn_bwd_jit, (dq, dk, dv) float64 references)."""
    torch.manual_seed(seed)
    lens_q, lens_k = varlen if varlen else ([sq] * B, [sk] * B)
    B = len(lens_q)
    max_sq, max_sk = max(lens_q), max(lens_k)
    sm_scale = 1.0 / math.sqrt(d)
    philox = (1234 + seed, 77)
    keep_all = dropout_keep(B * hq, max_sq, max_sk, dropout_p, *philox) if dropout_p else None

    def rnd(s, h):
        return [torch.randn(h, n, d).to(dtype).double() for n in s]

    qs, ks, vs, dos = rnd(lens_q, hq), rnd(lens_k, hk), rnd(lens_k, hk), rnd(lens_q, hq)
    os_, lses, grads = [], [], []
    for b in range(B):
        q, k, v = (t.clone().requires_grad_() for t in (qs[b], ks[b], vs[b]))
        keep = keep_all[b * hq:(b + 1) * hq, :lens_q[b], :lens_k[b]] if dropout_p else None
        o, lse = ref_attn(q, k, v, sm_scale, causal_type, keep, dropout_p)
        o.backward(dos[b])
        os_.append(o.detach().to(dtype))
        lses.append(lse.float())
        grads.append((q.grad, k.grad, v.grad))

    if varlen:
        # Packed (total, H, D); lse (H, total).
        cat = [torch.cat([t.transpose(0, 1) for t in ts]) for ts in (qs, ks, vs, os_, dos)]
        q, k, v, o, do = (t.to(dtype) for t in cat)
        lse = torch.cat(lses, 1).contiguous()
        ref = [torch.cat([g[i].transpose(0, 1) for g in grads]) for i in range(3)]
        cu_q = torch.tensor([0] + lens_q, dtype=torch.int32).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0] + lens_k, dtype=torch.int32).cumsum(0).to(torch.int32)
        extra = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_sq,
                     max_seqlen_k=max_sk)
    else:
        def stack(ts):  # list of (H, S, D) -> layout
            t = torch.stack(ts)
            return t.transpose(1, 2).contiguous() if layout == "bshd" else t.contiguous()
        q, k, v, o, do = (stack(ts).to(dtype) for ts in (qs, ks, vs, os_, dos))
        lse = torch.stack(lses).contiguous()
        ref = [stack([g[i] for g in grads]) for i in range(3)]
        extra = {}
    kwargs = dict(do=do, q=q, k=k, v=v, o=o, lse=lse, sm_scale=sm_scale,
                  causal_type=causal_type, layout=layout, dropout_p=dropout_p,
                  philox_seed=philox[0], philox_offset=philox[1], **extra)
    return kwargs, ref


def run(kwargs, **extra):
    q, k, v = kwargs["q"], kwargs["k"], kwargs["v"]
    out = tuple(torch.full_like(t, float("nan")) for t in (q, k, v))
    return attn_bwd_jit(**kwargs, out=out, **extra)


def check(got, ref, dtype):
    for name, g, r in zip(("dq", "dk", "dv"), got, ref):
        assert not torch.isnan(g).any(), f"{name} has NaN"
        torch.testing.assert_close(g.double(), r, **TOL[dtype], msg=lambda m: f"{name}: {m}")


def case(dtype=torch.float16, **kw):
    kwargs, ref = make_case(dtype=dtype, **kw)
    check(run(kwargs), ref, dtype)
    return kwargs


@pytest.mark.parametrize("sq,sk", [(1, 1), (17, 33), (33, 17), (45, 64)])
@pytest.mark.parametrize("d", [16, 40, 64])
def test_shapes_fp16(sq, sk, d):
    case(B=2, sq=sq, sk=sk, hq=2, hk=2, d=d)


@pytest.mark.parametrize("sq,sk", [(1, 1), (33, 17), (45, 64)])
def test_shapes_fp32(sq, sk):
    case(torch.float32, B=1, sq=sq, sk=sk, hq=2, hk=2, d=40)


@pytest.mark.parametrize("causal_type", [1, 2])
@pytest.mark.parametrize("sq,sk", [(17, 33), (33, 17), (45, 64)])
def test_causal(causal_type, sq, sk):
    case(B=2, sq=sq, sk=sk, hq=2, hk=2, d=40, causal_type=causal_type)


@pytest.mark.parametrize("causal_type", [1, 2])
def test_causal_fp32(causal_type):
    case(torch.float32, B=1, sq=33, sk=17, hq=2, hk=2, d=64, causal_type=causal_type)


@pytest.mark.parametrize("hq,hk", [(4, 2), (4, 1)])
@pytest.mark.parametrize("causal_type", [0, 2])
def test_gqa(hq, hk, causal_type):
    case(B=2, sq=17, sk=33, hq=hq, hk=hk, d=32, causal_type=causal_type)


@pytest.mark.parametrize("causal_type", [0, 1])
def test_layout_bhsd(causal_type):
    case(B=2, sq=33, sk=17, hq=2, hk=1, d=40, layout="bhsd", causal_type=causal_type)


@pytest.mark.parametrize("causal_type", [0, 1, 2])
def test_varlen(causal_type):
    case(B=0, sq=0, sk=0, hq=2, hk=1, d=40, causal_type=causal_type,
         varlen=([5, 1, 17], [9, 1, 12]))


def test_varlen_same_lengths_fp32():
    case(torch.float32, B=0, sq=0, sk=0, hq=2, hk=2, d=16, causal_type=2,
         varlen=([5, 1, 17], [5, 1, 17]))


@pytest.mark.parametrize("causal_type", [0, 2])
def test_dropout(causal_type):
    kwargs = case(B=2, sq=33, sk=45, hq=2, hk=1, d=32, causal_type=causal_type,
                  dropout_p=0.25)
    # The mask is real: about p of it dropped.
    keep = dropout_keep(4, 33, 45, 0.25, kwargs["philox_seed"], kwargs["philox_offset"])
    assert 0.15 < 1.0 - keep.float().mean().item() < 0.35


def test_dropout_varlen_fp32():
    case(torch.float32, B=0, sq=0, sk=0, hq=2, hk=2, d=16, causal_type=1,
         varlen=([5, 1, 17], [9, 1, 12]), dropout_p=0.5)


def test_dropout_changes_grads():
    """The backward really applies the mask: p > 0 must differ from p = 0."""
    kwargs, _ = make_case(B=1, sq=17, sk=17, hq=1, hk=1, d=16, dtype=torch.float32,
                          dropout_p=0.3)
    with_drop = run(kwargs)
    kwargs["dropout_p"] = 0.0
    without = run(kwargs)
    assert not torch.equal(with_drop[2], without[2])


def test_deterministic():
    kwargs, ref = make_case(B=2, sq=45, sk=33, hq=4, hk=1, d=40, dtype=torch.float32,
                            causal_type=2, dropout_p=0.2)
    a = run(kwargs)
    b = run(kwargs)
    check(a, ref, torch.float32)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("tiles", [(16, 32, 32, 16), (32, 16, 16, 32)])
@pytest.mark.parametrize("causal_type", [1, 2])
def test_uneven_tiles(tiles, causal_type):
    """BLOCK_M != BLOCK_N: the causal diagonal spans several inner blocks."""
    kv_m, kv_n, dq_m, dq_n = tiles
    cfg = {"pre": {"BLOCK_M": 16}, "dkdv": {"BLOCK_M": kv_m, "BLOCK_N": kv_n},
           "dq": {"BLOCK_M": dq_m, "BLOCK_N": dq_n}}
    kwargs, ref = make_case(B=0, sq=0, sk=0, hq=2, hk=1, d=16, dtype=torch.float16,
                            causal_type=causal_type, varlen=([45, 3, 17], [33, 20, 64]))
    check(run(dict(kwargs, config=cfg)), ref, torch.float16)
