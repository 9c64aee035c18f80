"""Flash attention forward through the Python package vs a float64 reference."""
import math

import pytest
import torch

from flash_reference import FWD_TOL, LSE_TOL, attention_ref, causal_visible, rel_err



def make_qkv(B, Sq, Sk, Hq, Hk, D, dtype, layout="bshd"):
    def t(S, H):
        if layout == "bshd":
            return torch.randn(B, S, H, D, device="cuda", dtype=dtype)
        return torch.randn(B, H, S, D, device="cuda", dtype=dtype).transpose(1, 2)  # (B,H,S,D) storage
    return t(Sq, Hq), t(Sk, Hk), t(Sk, Hk)


def check(q, k, v, causal_code, dtype, **kw):
    import aotriton

    scale = 1.0 / math.sqrt(q.shape[-1])
    out, lse, _ = aotriton.flash_attn_func(q, k, v, softmax_scale=scale, causal_type=["none", "top_left",
                                           "bottom_right"][causal_code], return_lse=True, **kw)
    ref, ref_lse = attention_ref(q, k, v, scale, causal_code)
    assert rel_err(out, ref) < FWD_TOL[dtype]
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "rows that see no key must have lse = -inf, only those"
    assert ((lse.double() - ref_lse)[finite].abs() / ref_lse[finite].abs().clamp_min(1)).max() < LSE_TOL[dtype]
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [16, 40, 64, 72, 96, 111, 128, 160, 256])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_head_dims_and_causal(dtype, D, causal):
    torch.manual_seed(D * 10 + causal)
    q, k, v = make_qkv(2, 203, 113, 4, 2, D, dtype)
    check(q, k, v, causal, dtype)


@pytest.mark.parametrize("Sq,Sk", [(1, 1), (1, 1023), (17, 113), (113, 17), (1023, 203), (2049, 2049)])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_seqlens(Sq, Sk, causal):
    torch.manual_seed(Sq + 7 * Sk + causal)
    q, k, v = make_qkv(1, Sq, Sk, 4, 4, 64, torch.float16)
    check(q, k, v, causal, torch.float16)


@pytest.mark.parametrize("Hq,Hk", [(8, 8), (8, 2), (6, 1)])
@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_gqa_and_layouts(Hq, Hk, layout):
    torch.manual_seed(Hq * 3 + Hk)
    q, k, v = make_qkv(2, 300, 257, Hq, Hk, 128, torch.bfloat16, layout)
    check(q, k, v, 2, torch.bfloat16)


def test_fp32():
    torch.manual_seed(5)
    q, k, v = make_qkv(2, 77, 130, 2, 1, 64, torch.float32)
    check(q, k, v, 1, torch.float32)


def test_non_contiguous_inputs():
    torch.manual_seed(6)
    qkv = torch.randn(2, 190, 3, 4, 64, device="cuda", dtype=torch.float16)  # packed qkv
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    check(q, k, v, 0, torch.float16)


@pytest.mark.parametrize("causal", [0, 2])
def test_varlen(causal):
    import aotriton

    torch.manual_seed(11 + causal)
    lens_q = [5, 1, 300, 17, 64]
    lens_k = [7, 33, 290, 17, 1]
    Hq, Hk, D = 4, 2, 96
    q = torch.randn(sum(lens_q), Hq, D, device="cuda", dtype=torch.float16)
    k = torch.randn(sum(lens_k), Hk, D, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device="cuda")
    scale = 0.1
    out, lse, _ = aotriton.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), softmax_scale=scale,
                                                  causal=bool(causal), return_lse=True)
    for b in range(len(lens_q)):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        ref, ref_lse = attention_ref(q[None, qs], k[None, ks], v[None, ks], scale, causal)
        if ref.abs().sum() > 0:
            assert rel_err(out[None, qs], ref) < FWD_TOL[torch.float16], b
        else:
            assert torch.equal(out[qs], torch.zeros_like(out[qs]))
        finite = torch.isfinite(ref_lse[0])
        got = lse[:, qs]
        assert torch.equal(torch.isfinite(got), finite)
        if finite.any():
            assert (got.double() - ref_lse[0])[finite].abs().max() < 1e-2


def test_dropout_statistics_reproducibility_and_mask():
    import aotriton

    torch.manual_seed(3)
    q, k, v = make_qkv(2, 257, 300, 4, 4, 64, torch.float16)
    p = 0.3
    philox = aotriton.philox_state(q.device, seed=1234, offset=0)
    out1 = aotriton.flash_attn_func(q, k, v, p, causal=True, philox=philox)
    out2 = aotriton.flash_attn_func(q, k, v, p, causal=True, philox=philox)
    assert torch.equal(out1, out2), "same seed/offset must give identical output"
    out3 = aotriton.flash_attn_func(q, k, v, p, causal=True, philox=aotriton.philox_state(q.device, seed=1235))
    assert not torch.equal(out1, out3)
    # The debug mask (a separate kernel regenerating the forward's Philox numbers) is the mask it used.
    out_m, mask = aotriton.flash_attn_func(q, k, v, p, causal=True, return_dropout_mask=True, philox=philox)
    vis = causal_visible(257, 300, 2, q.device)
    keep = mask.bool()
    rate = keep[:, :, vis].float().mean().item()
    n = keep[:, :, vis].numel()
    assert abs(rate - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n), rate
    ref, _ = attention_ref(q, k, v, 1 / 8, 2, keep=keep, dropout_p=p)
    assert rel_err(out_m, ref) < FWD_TOL[torch.float16]
    assert rel_err(out1, ref) < FWD_TOL[torch.float16], "mask path and plain dropout path must use the same mask"


def _one_hot_v(rows, heads, D, dtype):
    """v[n, h, :] = e_n: with D >= the keys, O[m, n] = P[m, n] * keep[m, n] / ((1 - p) * l)."""
    v = torch.zeros(rows, heads, D, device="cuda", dtype=dtype)
    n = torch.arange(rows, device="cuda")
    v[n, :, n % D] = 1
    return v


@pytest.mark.parametrize("causal", [0, 2])
def test_dropout_mask_kernel_is_the_forwards_mask(causal):
    """The keep mask the standalone kernel writes equals the one the forward
    applied, read off the forward's own output (no mask involved in it)."""
    import aotriton

    torch.manual_seed(21 + causal)
    B, Sq, Sk, Hq, Hk, D, p = 2, 77, 61, 4, 2, 64, 0.4
    q = torch.randn(B, Sq, Hq, D, device="cuda", dtype=torch.float16)
    k = torch.randn(B, Sk, Hk, D, device="cuda", dtype=torch.float16)
    v = torch.stack([_one_hot_v(Sk, Hk, D, torch.float16)] * B)
    philox = aotriton.philox_state(q.device, seed=(1 << 40) + 7, offset=(3 << 32) + 5)
    out, mask = aotriton.flash_attn_func(q, k, v, p, softmax_scale=0.05, causal=bool(causal),
                                         return_dropout_mask=True, philox=philox)
    vis = causal_visible(Sq, Sk, causal, q.device)
    forward_keep = out[..., :Sk].permute(0, 2, 1, 3) != 0  # (B, Hq, Sq, Sk)
    assert ((mask == 0) | (mask == 1)).all()
    assert torch.equal(mask.bool()[:, :, vis], forward_keep[:, :, vis])
    rate = mask[:, :, vis].float().mean().item()
    assert abs(rate - (1 - p)) < 0.03, rate


def test_varlen_dropout_mask_kernel_is_the_forwards_mask():
    import aotriton

    torch.manual_seed(5)
    lens_q, lens_k = [5, 40, 1, 33], [9, 64, 30, 0]
    Hq, Hk, D, p = 2, 1, 64, 0.3
    q = torch.randn(sum(lens_q), Hq, D, device="cuda", dtype=torch.float16)
    k = torch.randn(sum(lens_k), Hk, D, device="cuda", dtype=torch.float16)
    v = torch.cat([_one_hot_v(n, Hk, D, torch.float16) for n in lens_k])
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device="cuda")
    philox = aotriton.philox_state(q.device, seed=99, offset=12)
    out, mask = aotriton.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), p,
                                                softmax_scale=0.05, return_dropout_mask=True, philox=philox)
    for b, (sq, sk) in enumerate(zip(lens_q, lens_k)):
        a = int(cu_q[b])
        plane = mask[b, :, :sq, :sk]
        assert ((plane == 0) | (plane == 1)).all()
        assert torch.equal(plane.bool(), out[a:a + sq, :, :sk].permute(1, 0, 2) != 0), b


def test_sdpa_shaped_call():
    import aotriton

    torch.manual_seed(9)
    q = torch.randn(2, 8, 333, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, 333, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = aotriton.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True,
                                                           enable_gqa=True)
    assert out.shape == q.shape
    assert rel_err(out, ref) < FWD_TOL[torch.bfloat16]


def test_bad_inputs_raise():
    import aotriton

    q, k, v = make_qkv(1, 16, 16, 4, 4, 64, torch.float16)
    with pytest.raises(ValueError, match="head_dim 300"):
        aotriton.flash_attn_func(*make_qkv(1, 16, 16, 2, 2, 300, torch.float16))
    with pytest.raises(ValueError, match="expected fp16"):
        aotriton.flash_attn_func(q, k.float(), v)
    with pytest.raises(ValueError, match="multiple of num_heads_k"):
        aotriton.flash_attn_func(q, k[:, :, :3], v[:, :, :3])
    with pytest.raises(ValueError, match="size"):
        aotriton.flash_attn_func(q, k[:, :8], v)
    with pytest.raises(ValueError, match="contiguous"):
        aotriton.flash_attn_func(q.transpose(-1, -2), k, v)
    with pytest.raises(ValueError, match="dropout_p"):
        aotriton.flash_attn_func(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match="CUDA tensor"):
        aotriton.flash_attn_func(q.cpu(), k, v)


def test_cuda_graph_with_dropout():
    import aotriton

    torch.manual_seed(4)
    q, k, v = make_qkv(1, 128, 128, 2, 2, 64, torch.float16)
    philox = aotriton.philox_state(q.device, seed=7)
    aotriton.flash_attn_func(q, k, v, 0.2, philox=philox)
    s = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            out = aotriton.flash_attn_func(q, k, v, 0.2, philox=philox)
    philox[0].fill_(99)  # the graph reads the seed from device memory at replay
    g.replay()
    torch.cuda.synchronize()
    expect = aotriton.flash_attn_func(q, k, v, 0.2, philox=aotriton.philox_state(q.device, seed=99))
    assert torch.equal(out, expect)
