"""The int4 GEMM's dot order (tritonsrc/moe/dot_order.py) under TRITON_INTERPRET=1: the copy kernel
and act_and_mul_dot_order_kernel against python/jit/moe_quant.dot_order_activations, the permutation
of the GEMM's own activation_perm (the GPU tests check that one against the kernel)."""
import os

import pytest
import torch
import triton

from python.jit.moe_quant import dot_order_activations
from tritonsrc.moe.activation import SWIGLU_OAI, act_and_mul_kernel
from tritonsrc.moe.dot_order import act_and_mul_dot_order_kernel, dot_order_copy_kernel

assert os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_k", [64, 128, 256])
@pytest.mark.parametrize("rows,tiles,block", [(1, 1, 64), (3, 5, 256), (2, 3, 1024)])
def test_copy_matches_the_reference_permutation(dtype, block_k, rows, tiles, block):
    """Every value lands where dot_order_activations puts it (strided rows, several programs a
    row or one program over several tiles), nothing past the columns is written."""
    torch.manual_seed(rows * 31 + tiles + block_k)
    cols = tiles * block_k
    x = (torch.randn(rows, cols + 8) * 4).to(dtype)[:, 4:4 + cols]
    out = torch.full((rows, cols + 16), float("nan"), dtype=dtype)
    dot_order_copy_kernel[(rows, triton.cdiv(cols, block))](out, x, rows, cols, out.stride(0), x.stride(0),
                                                             BLOCK_K=block_k, BLOCK=block)
    assert torch.equal(out[:, :cols], dot_order_activations(x, block_k))
    assert out[:, cols:].isnan().all()


@pytest.mark.parametrize("activation", [0, 1, SWIGLU_OAI])
@pytest.mark.parametrize("block_k", [64, 128])
@pytest.mark.parametrize("rows,tiles,block", [(1, 1, 64), (4, 3, 256)])
def test_act_and_mul_writes_the_dot_order(activation, block_k, rows, tiles, block):
    """act_and_mul_dot_order: the plain kernel's output in the GEMM's dot order, exactly."""
    torch.manual_seed(rows * 7 + tiles + activation)
    cols = tiles * block_k
    x = (torch.randn(rows, 2 * cols) * 3).to(torch.float16)
    plain = torch.full((rows, cols), float("nan"), dtype=torch.float16)
    ordered = torch.full_like(plain, float("nan"))
    grid = (rows, triton.cdiv(cols, block))
    act_and_mul_kernel[grid](plain, x, rows, cols, plain.stride(0), x.stride(0), ACTIVATION=activation, BLOCK=block)
    act_and_mul_dot_order_kernel[grid](ordered, x, rows, cols, ordered.stride(0), x.stride(0),
                                       ACTIVATION=activation, DOT_ORDER_K=block_k, BLOCK=block)
    assert not plain.isnan().any()
    assert torch.equal(ordered, dot_order_activations(plain, block_k))
    assert not torch.equal(ordered, plain)  # the permutation is not the identity
