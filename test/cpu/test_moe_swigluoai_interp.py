"""gpt-oss's clamped SwiGLU (act_and_mul ACTIVATION 3) under TRITON_INTERPRET=1
vs float64 (fp16 / fp32; the interpreter's bf16 is wrong)."""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch
import triton

from moe_activation_reference import act_and_mul_ref  # noqa: E402
from tritonsrc.moe.activation import SWIGLU_OAI, act_and_mul_kernel  # noqa: E402


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.float32, 1e-6)])
@pytest.mark.parametrize("rows,cols,block", [(1, 1, 16), (3, 37, 16), (5, 300, 128)])
def test_swigluoai(dtype, tol, rows, cols, block):
    gen = torch.Generator().manual_seed(rows * 100 + cols)
    # Wide enough (|x| up to ~12) that both clamps (gate <= 7, |up| <= 7) are hit.
    wide = (torch.randn(rows, 2 * cols + 6, generator=gen) * 4).to(dtype)
    x = wide[:, 2:2 + 2 * cols]  # strided rows
    out = torch.full((rows, cols), float("nan"), dtype=dtype)
    act_and_mul_kernel[(rows, triton.cdiv(cols, block))](
        out, x, rows, cols, out.stride(0), x.stride(0), ACTIVATION=SWIGLU_OAI, BLOCK=block)
    ref = act_and_mul_ref(x, "swigluoai")
    assert torch.isfinite(out).all()
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < tol, err
    if cols >= 37:
        assert (x[:, 0::2] > 7).any() and (x[:, 1::2].abs() > 7).any()  # the clamps were exercised


def test_swigluoai_clamps_exactly():
    """Hand-checked values: gate clamps above only, up on both sides, interleaved order."""
    x = torch.tensor([[10.0, 10.0, -3.0, -10.0, 0.5, 2.0]])
    out = torch.full((1, 3), float("nan"))
    act_and_mul_kernel[(1, 1)](out, x, 1, 3, out.stride(0), x.stride(0), ACTIVATION=SWIGLU_OAI, BLOCK=16)
    s = lambda v: 1 / (1 + torch.exp(torch.tensor(-1.702 * v)))  # noqa: E731
    want = torch.tensor([7 * s(7.0) * 8, -3 * s(-3.0) * -6, 0.5 * s(0.5) * 3])
    torch.testing.assert_close(out[0], want.float())
