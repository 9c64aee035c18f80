"""The standalone dropout-mask kernel (tritonsrc/flash/dropout_mask.py) under
the Triton interpreter: its mask is the one the forward applied.

The forward no longer writes a mask, so its mask is read off its output: with
V = identity (head_dim >= seqlen_k), O[m, n] = P[m, n] * keep[m, n] / (1 - p)
/ l, and every visible P[m, n] > 0, so keep[m, n] = (O[m, n] != 0).
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import pytest
import torch
import triton

from tritonsrc.flash.dropout_mask import attn_dropout_mask
from tritonsrc.flash.fwd_configs import DROPOUT_MASK_CONFIG
from python.jit.flash_fwd import attn_fwd_jit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
POISON = 7


def visible(sq, sk, causal):
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    if causal == 1:
        return j <= i
    if causal == 2:
        return j <= i + sk - sq
    return torch.ones(sq, sk, dtype=torch.bool)


def identity_v(rows, heads, d, dtype):
    """v[n, h, :] = e_n (one-hot): O's column n is key n's weight."""
    v = torch.zeros(rows, heads, d, dtype=dtype)
    for n in range(rows):
        v[n, :, n % d] = 1.0
    return v


def run_mask_kernel(mask, seed, offset, p, hq, msq, msk, cu_q=None, cu_k=None, total_q=0, total_k=0,
                    config=DROPOUT_MASK_CONFIG):
    varlen = cu_q is not None
    dummy = torch.zeros(1, dtype=torch.int32)
    grid = (triton.cdiv(msq, config["BLOCK_M"]), mask.shape[0] * hq, 1)
    attn_dropout_mask[grid](
        torch.tensor([seed], dtype=torch.int64), torch.tensor([offset], dtype=torch.int64), mask,
        cu_q if varlen else dummy, cu_k if varlen else dummy, p,
        mask.stride(0), mask.stride(1), mask.stride(2), hq, msq, msk, total_q, total_k,
        IS_VARLEN=varlen, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
        num_warps=config["num_warps"], num_stages=config["num_stages"])


@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mask_kernel_equals_the_forwards_mask_batched(causal, dtype):
    torch.manual_seed(11 + causal)
    b, sq, sk, hq, hk, d, p = 2, 37, 29, 2, 1, 32, 0.4
    seed, offset = 987654321987, (5 << 32) + 3  # offset above 2^32: both counter words matter
    q = torch.randn(b, sq, hq, d).to(dtype)
    k = torch.randn(b, sk, hk, d).to(dtype)
    v = torch.stack([identity_v(sk, hk, d, dtype)] * b)
    o, _ = attn_fwd_jit(q, k, v, sm_scale=0.3, causal_type=causal, dropout_p=p, philox_seed=seed,
                        philox_offset=offset, config=SMALL)
    mask = torch.full((b, hq, sq, sk), POISON, dtype=torch.int8)
    run_mask_kernel(mask, seed, offset, p, hq, sq, sk)
    vis = visible(sq, sk, causal)
    assert ((mask == 0) | (mask == 1)).all(), "every in-sequence entry written, causal-hidden ones included"
    for bi in range(b):
        for h in range(hq):
            forward_keep = o[bi, :, h, :sk] != 0  # (sq, sk)
            assert torch.equal(mask[bi, h][vis].bool(), forward_keep[vis]), (bi, h)
    rate = mask[:, :, vis].float().mean().item()
    assert abs(rate - (1 - p)) < 0.05, rate


def test_mask_kernel_equals_the_forwards_mask_varlen():
    torch.manual_seed(4)
    lens_q, lens_k = [5, 0, 19], [9, 4, 17]
    hq, hk, d, p = 2, 2, 32, 0.5
    cu_q = torch.tensor([0, 5, 5, 24], dtype=torch.int32)
    cu_k = torch.tensor([0, 9, 13, 30], dtype=torch.int32)
    q = torch.randn(24, hq, d)
    k = torch.randn(30, hk, d)
    v = torch.cat([identity_v(n, hk, d, torch.float32) for n in lens_k])
    msq, msk = 20, 18  # larger than every sequence: the buffer has slack
    o, _ = attn_fwd_jit(q, k, v, sm_scale=0.25, causal_type=2, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                        max_seqlen_q=msq, max_seqlen_k=msk, dropout_p=p, philox_seed=42, philox_offset=9,
                        config=SMALL)
    mask = torch.full((3, hq, msq, msk), POISON, dtype=torch.int8)
    run_mask_kernel(mask, 42, 9, p, hq, msq, msk, cu_q, cu_k, 24, 30, config=SMALL)
    for bi, (sq, sk) in enumerate(zip(lens_q, lens_k)):
        a, ka = int(cu_q[bi]), int(cu_k[bi])
        plane = mask[bi, :, :sq, :sk]
        assert ((plane == 0) | (plane == 1)).all()
        assert (mask[bi, :, sq:] == POISON).all() and (mask[bi, :, :, sk:] == POISON).all(), "outside its sequence"
        vis = visible(sq, sk, 2)
        for h in range(hq):
            forward_keep = o[a:a + sq, h, :sk] != 0
            assert torch.equal(plane[h][vis].bool(), forward_keep[vis]), (bi, h)


def test_jit_launcher_returns_the_regenerated_mask():
    # return_mask=True runs the forward, then the mask kernel (what the C++ operator does).
    torch.manual_seed(8)
    q, k = torch.randn(1, 21, 1, 16), torch.randn(1, 16, 1, 16)
    v = identity_v(16, 1, 16, torch.float32)[None]
    o, _, mask = attn_fwd_jit(q, k, v, sm_scale=0.5, dropout_p=0.3, philox_seed=1, philox_offset=2,
                              return_mask=True, config=SMALL)
    assert torch.equal(mask[0, 0].bool(), o[0, :, 0, :] != 0)
    assert 0 < mask.float().mean().item() < 1
