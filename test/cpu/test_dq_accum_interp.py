"""The atomic dQ path's two Triton kernels under the interpreter, launched
through their rules (python/jit_launch.py: the AOT build's argument order,
strides and grid): bwd_preprocess with ZERO_DQ_ACC zeroes the fp32
accumulator (NaN-poisoned here) besides writing Delta, and bwd_dq_convert
writes dq = fp32(sm_scale) * accumulator in dq's type. (The Gluon kernel
that sums into the accumulator between them needs an sm_90 GPU:
test/gpu/test_flash_hopper_bwd_gpu.py.)"""
import math

import pytest
import torch

# Batched [B, S, H, D] like the AOT route (the rules build only IS_VARLEN=False for the conversion).
B, S, H, D = 2, 37, 3, 64


def _view(t):
    from python.jit_launch import View
    return View(t, z=0, h=2, m=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_preprocess_zeroes_the_accumulator_and_convert_scales_it(dtype):
    from python.jit_launch import View, launch
    from python import rules_flash, rules_flash_hopper

    g = torch.Generator().manual_seed(7)
    o, do = (torch.randn(B, S, H, D, generator=g).to(dtype) for _ in range(2))
    delta = torch.full((B, H, S), float("nan"))
    dqa = torch.full((B, S, H, D), float("nan"))
    seqs = torch.zeros(1, dtype=torch.int32)
    launch(rules_flash.bwd_preprocess, dict(
        O=_view(o), DO=_view(do), Delta=View(delta, z=0, h=1), DQA=_view(dqa), cu_seqlens_q=seqs,
        num_heads_q=H, max_seqlen_q=S, head_dim=D, total_q=B * S, num_seqs=B,
    ), functional=dict(BLOCK_DMODEL=D, PADDED_HEAD=False, IS_VARLEN=False, ZERO_DQ_ACC=True),
        config={"BLOCK_M": 16, "num_warps": 4, "num_stages": 1})
    assert torch.equal(dqa, torch.zeros_like(dqa)), "the accumulator is zeroed"
    want = (o.double() * do.double()).sum(-1).transpose(1, 2)
    torch.testing.assert_close(delta.double(), want, rtol=1e-5, atol=1e-5)

    acc = torch.randn(B, S, H, D, generator=g)
    dq = torch.full((B, S, H, D), float("nan")).to(dtype)
    scale = 1.0 / math.sqrt(D)
    launch(rules_flash_hopper.bwd_dq_convert, dict(
        DQA=_view(acc), DQ=_view(dq), cu_seqlens_q=seqs, sm_scale=scale, num_heads_q=H, max_seqlen_q=S,
        head_dim=D, total_q=B * S, num_seqs=B,
    ), functional=dict(BLOCK_DMODEL=D, PADDED_HEAD=False, IS_VARLEN=False),
        config={"BLOCK_M": 16, "num_warps": 4, "num_stages": 1})
    assert torch.equal(dq, (acc * torch.tensor(scale, dtype=torch.float32)).to(dtype))
