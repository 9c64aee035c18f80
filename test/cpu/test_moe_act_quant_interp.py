"""act_and_mul_group_quant_fp8_kernel (GEMM2's input for 128x128 block scales) under
TRITON_INTERPRET=1: bitwise the two kernels it replaces (act_and_mul_kernel, then
per_token_group_quant_fp8_kernel on the 16-bit product), q and scales, for every
activation; partial last groups and row blocks; q's padding untouched."""
import os

import pytest
import torch
import triton

import test_moe_interp  # noqa: F401  (its patch: the interpreter's fp32 -> fp8 rounds to nearest even, as GPUs)
from tritonsrc.moe.act_quant import act_and_mul_group_quant_fp8_kernel
from tritonsrc.moe.activation import act_and_mul_kernel
from tritonsrc.moe.quant import per_token_group_quant_fp8_kernel

assert os.environ.get("TRITON_INTERPRET") == "1"
FP8, GROUP = torch.float8_e4m3fn, 128


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])  # the interpreter's bf16 is wrong
@pytest.mark.parametrize("activation", [0, 1, 2, 3])
@pytest.mark.parametrize("rows,cols,block_m", [(1, 128, 4), (5, 320, 2), (3, 256, 4), (9, 144, 8)])
def test_fused_equals_act_then_group_quant(dtype, activation, rows, cols, block_m):
    torch.manual_seed(rows * 1000 + cols + activation)
    buf = torch.randn(rows, 2 * cols + 16, dtype=torch.float32).to(dtype) * 4
    x = buf[:, 16:]  # strided rows
    x[0, :7] = 0.0  # a group with zeros in it
    groups = triton.cdiv(cols, GROUP)
    # The two-kernel path.
    mid = torch.empty(rows, cols, dtype=dtype)
    act_and_mul_kernel[(rows, triton.cdiv(cols, 64))](mid, x, rows, cols, mid.stride(0), x.stride(0),
                                                       ACTIVATION=activation, BLOCK=64)
    q_ref = torch.empty(rows, cols, dtype=FP8)
    s_ref = torch.empty(rows, groups)
    per_token_group_quant_fp8_kernel[(triton.cdiv(rows, 2), groups)](
        mid, q_ref, s_ref, rows, cols, mid.stride(0), q_ref.stride(0), s_ref.stride(0), s_ref.stride(1),
        GROUP=GROUP, ALIGNED=False, BLOCK_M=2)
    # Fused, into poisoned buffers with padding.
    q_full = torch.full((rows, cols + 32), 0x7F, dtype=torch.uint8).view(FP8)
    q = q_full[:, :cols]
    s = torch.full((rows, groups), float("nan"))
    act_and_mul_group_quant_fp8_kernel[(triton.cdiv(rows, block_m), groups)](
        q, s, x, rows, cols, q.stride(0), s.stride(0), s.stride(1), x.stride(0), ACTIVATION=activation,
        GROUP=GROUP, BLOCK_M=block_m)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert (q_full[:, cols:].view(torch.uint8) == 0x7F).all()
    assert (s_ref > 0).all() and q_ref.float().abs().max() > 100  # not a vacuous comparison
