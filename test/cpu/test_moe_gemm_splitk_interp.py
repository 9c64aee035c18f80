"""Split-K of the grouped MoE GEMM (grouped_gemm.py, functional SPLIT_K) under
TRITON_INTERPRET=1: split s of a slot lands in C row slot * SPLIT_K + s and the
splits sum to the unsplit product, for fp16 and fp8 per-tensor / 128x128 block
weights (the block path's first scale group of a split starts mid-K), K tiles
that do not divide evenly among the splits (an empty split writes zeros) and
an expert id outside [0, E). fp32 C keeps the partials exact."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import test_moe_interp as base  # noqa: E402
from python.jit import moe as mj  # noqa: E402

CFG = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=64, GROUP_SIZE_M=1)


def _operands(quant, M, E, N, K, gen):
    x = torch.randn(M, K, generator=gen).half()
    b = torch.randn(E, N, K, generator=gen) / K ** 0.5
    if quant == mj.QUANT_NONE:
        return x, b.half(), None, None
    if quant == mj.QUANT_FP8_TENSOR:
        a_s = torch.tensor([x.float().abs().max().item() / 448.0])
        b_s = b.abs().amax((1, 2)) / 448.0
        return mj.per_tensor_quant_fp8(x, a_s), (b / b_s[:, None, None]).to(base.FP8), a_s, b_s
    a_q, a_s = mj.per_token_group_quant_fp8(x)
    b_q, b_s = base.quant_weight_block(b)
    return a_q, b_q, a_s, b_s


def _run(ops, w, ids, topk, E, N, split, expert_ids=None):
    a, b, a_s, b_s = ops
    rows = ids.numel()
    s, e, n = mj.moe_align_block_size(ids, 16, E)
    if expert_ids is not None:
        e = expert_ids(e)
    c = torch.full((rows * split, N), float("nan"), dtype=torch.float32)  # poisoned: every row is written
    quant = mj.QUANT_NONE if a_s is None else (mj.QUANT_FP8_BLOCK if a_s.dim() == 2 else mj.QUANT_FP8_TENSOR)
    mj.invoke_grouped_gemm(a, b, c, w, s, e, n, topk, dict(CFG, SPLIT_K=split), mul_routed_weight=True,
                           quant=quant, a_scale=a_s, b_scale=b_s)
    assert not c.isnan().any()
    return c.view(rows, split, N)


@pytest.mark.parametrize("quant", [mj.QUANT_NONE, mj.QUANT_FP8_TENSOR, mj.QUANT_FP8_BLOCK])
@pytest.mark.parametrize("split_k", [2, 3, 5])
def test_split_partials_sum_to_the_product(quant, split_k):
    M, topk, E, N, K = 5, 2, 4, 48, 256  # 4 K tiles: 3 and 5 splits leave uneven / empty ones
    gen = torch.Generator().manual_seed(quant * 10 + split_k)
    w, ids = base.routing(M, E, topk, gen)
    ops = _operands(quant, M, E, N, K, gen)
    whole = _run(ops, w, ids, topk, E, N, 1)[:, 0]
    parts = _run(ops, w, ids, topk, E, N, split_k)
    torch.testing.assert_close(parts.sum(1), whole, atol=1e-4 * whole.abs().max().item(), rtol=1e-5)
    if split_k == 5:  # 4 tiles over 5 splits: the last split has none and adds zeros
        assert parts[:, 4].abs().max() == 0
    assert (parts[:, 0] - whole).abs().max() > 1e-3 * whole.abs().max()  # a split is not the whole product


def test_invalid_expert_block_writes_zero_partials():
    M, topk, E, N, K = 6, 2, 4, 32, 128
    gen = torch.Generator().manual_seed(7)
    w, ids = base.routing(M, E, topk, gen)
    ops = _operands(mj.QUANT_NONE, M, E, N, K, gen)
    s, _, _ = mj.moe_align_block_size(ids, 16, E)
    bad = s[:16][s[:16] < M * topk].long()  # the slots of block 0

    def break_block0(e):
        e = e.clone()
        e[0] = E  # out of range
        return e

    parts = _run(ops, w, ids, topk, E, N, 2, break_block0)
    assert len(bad) and parts[bad].abs().max() == 0
    whole = _run(ops, w, ids, topk, E, N, 1)[:, 0]
    kept = torch.ones(M * topk, dtype=torch.bool)
    kept[bad] = False
    torch.testing.assert_close(parts.sum(1)[kept], whole[kept], atol=1e-4 * whole.abs().max().item(), rtol=1e-5)
