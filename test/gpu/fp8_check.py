"""fp8 comparison shared by the MoE GPU tests."""
import torch


def assert_fp8_close(q, ref):
    """Equal, except one e4m3 step where the fp32 quotient sits on a rounding
    boundary (GPU and torch division may differ in the last fp32 bit)."""
    a, b = q.float(), ref.float()
    diff = (a - b).abs()
    step = torch.exp2(torch.floor(torch.log2(b.abs().clamp_min(2.0 ** -6))) - 3)
    assert (diff <= step).all(), diff.max()
    assert (diff > 0).float().mean().item() < 1e-3
