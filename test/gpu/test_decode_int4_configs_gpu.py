"""The decode and int4 tuning options on the GPU, through the Triton JIT (the
same kernels the AOT build compiles): the CPU interpreter neither pipelines
loads nor computes bf16 correctly, so the paged block-table prefetch under
num_stages 2-5 and the int4 offset dot (INT4_DOT 1) in bf16 are checked here
against float32 references on fresh random data, outputs NaN-poisoned.
Skipped without a GPU (test/gpu/conftest.py)."""

import pytest
import torch

from python.jit.flash_decode import decode_jit  # noqa: E402
from python.jit import moe as mj  # noqa: E402
from python.jit import moe_quant as mq  # noqa: E402

DEV = "cuda"
DECODE_CONFIGS = [
    {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},   # the default at D 128
    {"BLOCK_M": 16, "BLOCK_N": 128, "num_warps": 4, "num_stages": 4},  # tiles of two pages of 64
    {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 8, "num_stages": 5},   # two tiles per page
    {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# page None: contiguous; 16: the per-key gather (tiles of several pages); 64:
# the PAGE_TILES kernel (whose tiles fit a page: BLOCK_N <= 64).
DECODE_CASES = [(c, page) for c in DECODE_CONFIGS for page in (None, 16, 64) if not (page == 64 and c["BLOCK_N"] > 64)]


@pytest.mark.parametrize("cfg,page", DECODE_CASES,
                         ids=lambda x: f"n{x['BLOCK_N']}w{x['num_warps']}s{x['num_stages']}" if isinstance(x, dict)
                         else f"page{x}")
def test_decode_configs_bf16(cfg, page):
    B, Hq, Hk, D = 3, 32, 4, 128
    paged = page is not None
    lens = [1000, 4096, 37]  # uneven lengths, one shorter than a tile
    cap = 4096
    g = torch.Generator(device=DEV).manual_seed(cfg["BLOCK_N"] * 10 + cfg["num_stages"] + (page or 0))
    q = torch.randn(B, 1, Hq, D, device=DEV, dtype=torch.bfloat16, generator=g)
    if paged:
        nb = B * cap // page + 5
        k = torch.randn(nb, page, Hk, D, device=DEV, dtype=torch.bfloat16, generator=g)
        v = torch.randn(nb, page, Hk, D, device=DEV, dtype=torch.bfloat16, generator=g)
        table = torch.randperm(nb, device=DEV, generator=g)[:B * cap // page].view(B, -1).to(torch.int32)
    else:
        k = torch.randn(B, cap, Hk, D, device=DEV, dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, cap, Hk, D, device=DEV, dtype=torch.bfloat16, generator=g)
        table = None
    cs = torch.tensor(lens, dtype=torch.int32, device=DEV)
    for splits in (1, 7):
        out = torch.full_like(q, float("nan"))
        decode_jit(q, k, v, cs, sm_scale=D ** -0.5, block_table=table, num_splits=splits, config=cfg, out=out)
        for b, n in enumerate(lens):
            idx = torch.arange(n, device=DEV)
            if paged:
                kc, vc = k[table[b, idx // page].long(), idx % page], v[table[b, idx // page].long(), idx % page]
            else:
                kc, vc = k[b, :n], v[b, :n]
            ref = torch.nn.functional.scaled_dot_product_attention(
                q[b].transpose(0, 1).float(), kc.transpose(0, 1).float(), vc.transpose(0, 1).float(),
                scale=D ** -0.5, enable_gqa=True).transpose(0, 1)
            assert _rel(out[b], ref) < 1e-2, (b, splits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_k,group,with_zp", [(128, 128, True), (256, 64, True), (256, 128, False)], ids=str)
@pytest.mark.parametrize("block_n,warps", [(64, 4), (16, 2)], ids=str)
def test_int4_offset_dot(dtype, block_k, group, with_zp, block_n, warps):
    """INT4_DOT 1-4 (3 and 4 inline PTX: the GPU only) against the float32 product of the dequantized weights,
    and against INT4_DOT 0 (same products, exact vs offset dequantization)."""
    M, topk, E, N, K = 7, 2, 8, 512, 1024 + 256
    g = torch.Generator(device=DEV).manual_seed(block_k + group + with_zp)
    x = torch.randn(M, K, device=DEV, generator=g).to(dtype)
    b = torch.randn(E, N, K, device=DEV, generator=g) + (0.5 if with_zp else 0.0)
    packed, s, zp = mq.quantize_int4_groups(b, group, with_zp)
    deq = mq.dequantize_int4_groups(packed, s, zp, group).float()
    w = torch.rand(M, topk, device=DEV, generator=g) + 0.1
    ids = torch.rand(M, E, device=DEV, generator=g).topk(topk, dim=-1).indices.to(torch.int32)
    ref = torch.stack([x[i // topk].float() @ deq[ids.view(-1)[i]].T for i in range(M * topk)])
    ref *= w.view(-1, 1)
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    outs = []
    for dot in (0, 1, 2, 3, 4):
        c = torch.full((M * topk, N), float("nan"), device=DEV, dtype=dtype)
        cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=block_k, GROUP_SIZE_M=1, num_warps=warps,
                   num_stages=3, INT4_DOT=dot)
        mq.invoke_grouped_gemm_wq(x, packed, c, w.view(-1), sid, e, n, topk, cfg, 4, s, zp, group,
                                  mul_routed_weight=True)
        assert _rel(c, ref) < (1e-2 if dtype == torch.bfloat16 else 2e-3), dot
        outs.append(c.float())
    for other in outs[1:]:
        assert _rel(other, outs[0]) < (1e-2 if dtype == torch.bfloat16 else 2e-3)
