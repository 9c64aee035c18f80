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
    moe_sum_kernel[(tokens, triton.cdiv(hidden, block))](
        out, x, tokens, topk, hidden, out.stride(0), x.stride(0), x.stride(1), BLOCK=block)
    ref = x.double().sum(1)
    assert not out.isnan().any()
    err = (out.double() - ref).norm() / ref.norm()
    assert err < tol, err
