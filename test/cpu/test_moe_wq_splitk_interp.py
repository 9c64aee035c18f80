"""Split-K of the weight-only MoE GEMM (grouped_gemm_wq.py, SPLIT_K) under
TRITON_INTERPRET=1: each split's partial lands in C row slot * SPLIT_K + s,
and summing each slot's SPLIT_K rows gives the unsplit product (and the
float64 reference), for int8 and int4 weights, K tiles that do not divide
evenly among the splits (an empty split writes zeros) and invalid expert
blocks. fp32 C, so the partials are exact; fp16 activations (the
interpreter's bf16 is wrong)."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import test_moe_interp as base  # noqa: E402
from python.jit import moe as mj  # noqa: E402
from python.jit import moe_quant as mq  # noqa: E402

CFG = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1)


def _run(x, b, w, ids, topk, E, cfg, bits, s, zp=None, group=0):
    M, N = x.shape[0], b.shape[1]
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    split = cfg.get("SPLIT_K", 1)
    c = torch.full((M * topk * split, N), float("nan"), dtype=torch.float32)  # poisoned: every row is written
    mq.invoke_grouped_gemm_wq(x, b, c, w, sid, e, n, topk, dict(cfg), bits, s, zp, group, mul_routed_weight=True)
    assert not c.isnan().any()
    return c.view(M * topk, split, N)


@pytest.mark.parametrize("split_k", [2, 3, 5])
def test_int8_split_partials_sum_to_the_product(split_k):
    M, topk, E, N, K = 7, 2, 4, 48, 256  # 4 K tiles: 3 and 5 splits leave uneven / empty ones
    gen = torch.Generator().manual_seed(split_k)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).half()
    q, s = mq.quantize_int8_per_channel(torch.randn(E, N, K, generator=gen))
    ref = base.ref_grouped_gemm(x.double(), q.double() * s.double()[..., None], ids, topk, w)
    whole = _run(x, q, w, ids, topk, E, CFG, 8, s)[:, 0]
    parts = _run(x, q, w, ids, topk, E, dict(CFG, SPLIT_K=split_k), 8, s)
    torch.testing.assert_close(parts.sum(1), whole, atol=1e-4 * whole.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(parts.sum(1).double(), ref, atol=2e-3 * ref.abs().max().item(), rtol=2e-3)
    if split_k == 5:  # 4 tiles over 5 splits: the last split has none and adds zeros
        assert parts[:, 4].abs().max() == 0
    assert (parts[:, 0] - whole).abs().max() > 1e-3 * whole.abs().max()  # a split is not the whole product


@pytest.mark.parametrize("int4_dot", [0, 2])
@pytest.mark.parametrize("split_k,block_k", [(2, 128), (3, 64)])
def test_int4_split_partials_sum_to_the_product(int4_dot, split_k, block_k):
    M, topk, E, N, K, group = 5, 2, 3, 32, 384, 64  # split boundaries inside and between groups' tiles
    gen = torch.Generator().manual_seed(int4_dot * 10 + split_k)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).half()
    packed, s, zp = mq.quantize_int4_groups(torch.randn(E, N, K, generator=gen) + 0.5, group, True)
    ref = base.ref_grouped_gemm(x.double(), mq.dequantize_int4_groups(packed, s, zp, group), ids, topk, w)
    cfg = dict(CFG, BLOCK_SIZE_K=block_k, INT4_DOT=int4_dot)
    whole = _run(x, packed, w, ids, topk, E, cfg, 4, s, zp, group)[:, 0]
    parts = _run(x, packed, w, ids, topk, E, dict(cfg, SPLIT_K=split_k), 4, s, zp, group)
    torch.testing.assert_close(parts.sum(1), whole, atol=1e-4 * whole.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(parts.sum(1).double(), ref, atol=2e-3 * ref.abs().max().item(), rtol=2e-3)


def test_invalid_expert_blocks_write_zero_partials():
    """A block whose expert id is outside [0, E) writes zeros in every split's row."""
    M, topk, E, N, K = 6, 2, 4, 32, 128
    gen = torch.Generator().manual_seed(7)
    w, ids = base.routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).half()
    q, s = mq.quantize_int8_per_channel(torch.randn(E, N, K, generator=gen))
    sid, e, n = mj.moe_align_block_size(ids, 16, E)
    bad = sid[:16][sid[:16] < M * topk].long()  # the slots of block 0
    e[0] = E  # out of range
    c = torch.full((M * topk * 2, N), float("nan"), dtype=torch.float32)
    mq.invoke_grouped_gemm_wq(x, q, c, w, sid, e, n, topk, dict(CFG, SPLIT_K=2), 8, s, mul_routed_weight=True)
    parts = c.view(M * topk, 2, N)
    assert len(bad) and parts[bad].abs().max() == 0
    kept = torch.ones(M * topk, dtype=torch.bool)
    kept[bad] = False
    ref = base.ref_grouped_gemm(x.double(), q.double() * s.double()[..., None], ids, topk, w)
    torch.testing.assert_close(parts.sum(1)[kept].double(), ref[kept], atol=2e-3 * ref.abs().max().item(), rtol=2e-3)
