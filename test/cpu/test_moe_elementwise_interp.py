"""act_and_mul and moe_sum Triton kernels under TRITON_INTERPRET=1 vs float64."""
import os

import pytest
import torch
import triton

from tritonsrc.moe.activation import act_and_mul_kernel
from tritonsrc.moe.moe_sum import moe_sum_kernel

assert os.environ.get("TRITON_INTERPRET") == "1"


def ref_act(x, activation):
    x = x.double()
    if activation == 0:
        return torch.nn.functional.silu(x)
    return torch.nn.functional.gelu(x, approximate="none" if activation == 1 else "tanh")


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.float32, 1e-5)])
@pytest.mark.parametrize("activation", [0, 1, 2])
@pytest.mark.parametrize("rows,cols", [(1, 8), (5, 33), (3, 200)])
def test_act_and_mul(dtype, tol, activation, rows, cols):
    torch.manual_seed(rows * 131 + cols + activation)
    # Strided rows: the input is a slice of a wider buffer.
    buf = torch.randn(rows, 2 * cols + 6, dtype=dtype) * 3
    x = buf[:, 3 : 3 + 2 * cols]
    out = torch.full((rows, cols), float("nan"), dtype=dtype)
    block = 64
    act_and_mul_kernel[(rows, triton.cdiv(cols, block))](
        out, x, rows, cols, out.stride(0), x.stride(0), ACTIVATION=activation, BLOCK=block)
    ref = ref_act(x[:, :cols], activation) * x[:, cols:].double()
    assert not out.isnan().any()
    err = (out.double() - ref).norm() / ref.norm()
    assert err < tol, err


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.float32, 1e-6)])
@pytest.mark.parametrize("tokens,topk,hidden", [(1, 1, 8), (7, 2, 100), (4, 8, 65)])
def test_moe_sum(dtype, tol, tokens, topk, hidden):
    torch.manual_seed(tokens * 7 + topk + hidden)
    x = torch.randn(tokens, topk, hidden + 3, dtype=dtype)[:, :, :hidden]
    out = torch.full((tokens, hidden), float("nan"), dtype=dtype)
    block = 32
    ids = torch.full((1, ), 10**6, dtype=torch.int32)  # rows_per_slot 0: never read
    moe_sum_kernel[(tokens, triton.cdiv(hidden, block))](
        out, x, ids, ids, tokens, topk, hidden, 0, 1, 1, out.stride(0), x.stride(0), x.stride(1), BLOCK=block, BLOCK_R=4)
    ref = x.double().sum(1)
    assert not out.isnan().any()
    err = (out.double() - ref).norm() / ref.norm()
    assert err < tol, err


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("with_map", [False, True])
def test_moe_sum_skips_dropped_slots(split, with_map):
    """fused_experts' form: rows are slots' rows (split consecutive partial rows per
    slot, token m's slots m * topk ...), and dropped slots (id out of range, or mapped to
    -1) are rows GEMM2 never wrote: poisoned with NaN here, they must be skipped; the
    sum of the kept rows otherwise, in float32 then rounded as the plain sum is."""
    tokens, topk, hidden, E = 5, 2, 40, 4
    gen = torch.Generator().manual_seed(split * 2 + with_map)
    x = torch.randn(tokens, topk * split, hidden, generator=gen).to(torch.float16)
    if with_map:
        emap = torch.tensor([1, -1, 3, 0, -1, 2], dtype=torch.int32)
        ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, -2, 3, 1], dtype=torch.int32)  # 1, 4: -1; 6, -2: out of range
    else:
        emap = None
        ids = torch.tensor([0, 1, 2, 3, 4, 5, 1, -1, 3, 0], dtype=torch.int32)  # 4, 5 >= E; -1
    slot_rows = x.view(tokens * topk, split, hidden)
    kept = torch.tensor([(e >= 0 and e < E) if emap is None else (0 <= e < emap.numel() and emap[e] >= 0)
                         for e in ids.tolist()])
    assert 0 < int(kept.sum()) < tokens * topk
    ref = (slot_rows.float() * kept[:, None, None]).sum(1).view(tokens, topk, hidden).sum(1).to(x.dtype)
    slot_rows[~kept] = float("nan")
    out = torch.full((tokens, hidden), float("nan"), dtype=x.dtype)
    moe_sum_kernel[(tokens, triton.cdiv(hidden, 32))](
        out, x, ids, ids if emap is None else emap, tokens, topk * split, hidden, split, E,
        0 if emap is None else emap.numel(), out.stride(0), x.stride(0), x.stride(1), BLOCK=32, BLOCK_R=4)
    assert not out.isnan().any()
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
