"""Stage-by-stage diagnosis of fused_experts fp8 per-tensor (issue 18 item 5:
test_fused_experts_fp8[2048-8-1-512-256-dtype8-1-False-False] at rel err 0.0322).

The end-to-end reference (ref_fused) re-derives the dynamic a2 scale and the
fp8 rounding of the intermediate from its own float64 GEMM1. On the CPU, an
exact emulation of the operator (fp32 accumulation) lands 0.0017 from it, but
the comparison is ill-conditioned: moving the a2 scale by 0.1% moves the
metric to 0.008, by one bf16 step of the single max element to 0.022. These
tests split the pipeline with the public stage ops on the same inputs, each
stage against float64 of ITS OWN inputs (well conditioned), and fused_experts
against the staged pipeline, so a GPU run says which stage differs:
  - fused vs staged differs: the operator's glue (buffers, scales) is wrong;
  - GEMM1 vs float64 of the same fp8 operands is off by >= 1e-3: the fp8
    wgmma accumulation;
  - all pass: the end-to-end reference's quantization decisions differ from
    the operator's (the reference, not the operator, is fragile).
Numbers are printed (-s) for the report.
"""
import pytest
import torch
from test_moe_fused_gpu import (DEV, FP8, TENSOR, _fused_inputs, aot, need_fp8, ref_fused, rel_err)

CASE = (2048, 8, 1, 512, 256, torch.bfloat16)  # M, E, topk, K, N, dtype of the failing test


def _staged(x, w, ids, w1, w2, s1, s2, E, topk):
    import aotriton

    M, K = x.shape
    N = w1.shape[1] // 2
    bs = aotriton.moe_gemm_block_size(M, True)
    sid, eid, ntpp = aot(aotriton.moe_align_block_size, ids, bs, E)
    a1q, a1s = aot(aotriton.per_tensor_quant_fp8, x)
    h = torch.full((M * topk, 2 * N), float("nan"), dtype=x.dtype, device=DEV)
    aot(aotriton.invoke_fused_moe_kernel, a1q, w1, h, None, sid, eid, ntpp, topk, bs, quant=TENSOR,
        A_scale=a1s, B_scale=s1)
    c2 = aotriton.silu_and_mul(h)
    a2q, a2s = aot(aotriton.per_tensor_quant_fp8, c2)
    out = torch.full((M * topk, K), float("nan"), dtype=x.dtype, device=DEV)
    aot(aotriton.invoke_fused_moe_kernel, a2q, w2, out, w, sid, eid, ntpp, 1, bs, mul_routed_weight=True,
        quant=TENSOR, A_scale=a2s, B_scale=s2)
    return dict(a1q=a1q, a1s=a1s, h=h, c2=c2, a2q=a2q, a2s=a2s, out=out.view(M, topk, K).sum(1))


@need_fp8
def test_fp8_tensor_stages():
    import aotriton

    M, E, topk, K, N, dtype = CASE
    x, w, ids, _, w1, w2, s1, s2, d1, d2 = _fused_inputs(M, E, topk, K, N, dtype, "random", False, TENSOR,
                                                          M * 3 + K + TENSOR)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    aot(aotriton.fused_experts, x, w1, w2, w, ids, out=out, use_fp8_w8a8=True, w1_scale=s1, w2_scale=s2)
    st = _staged(x, w, ids, w1, w2, s1, s2, E, topk)
    flat = ids.reshape(-1).long()
    # GEMM1 against float64 of the operator's own fp8 operands.
    a1 = st["a1q"].double() * st["a1s"].double()
    h64 = torch.empty(M * topk, 2 * N, dtype=torch.float64, device=DEV)
    for e in flat.unique().tolist():
        sl = (flat == e).nonzero().flatten()
        h64[sl] = a1[sl // topk] @ d1[e].T
    gemm1 = rel_err(st["h"], h64)
    h_flips = (st["h"] != h64.to(dtype)).double().mean().item()
    # GEMM2 against float64 of the operator's own quantized intermediate.
    a2 = st["a2q"].double() * st["a2s"].double()
    o64 = torch.zeros(M, K, dtype=torch.float64, device=DEV)
    wf = w.reshape(-1).double()
    for e in flat.unique().tolist():
        sl = (flat == e).nonzero().flatten()
        o64.index_add_(0, sl // topk, wf[sl, None] * (a2[sl] @ d2[e].T))
    gemm2 = rel_err(st["out"], o64)
    fused_vs_staged = rel_err(out, st["out"].double())
    # What the end-to-end reference does instead.
    ref = ref_fused(x, d1, d2, w, flat.view(M, topk), "silu", TENSOR)
    ref_a2s = ref_fused_a2_scale(x, d1, ids, topk, N, dtype)
    print(f"\nGEMM1 vs f64(own operands) {gemm1:.2e}, bf16 h differing from rounded f64: {h_flips:.3%}"
          f"\nGEMM2 vs f64(own a2) {gemm2:.2e}; fused vs staged {fused_vs_staged:.2e}"
          f"\na2 scale: operator {st['a2s'].item():.9g}, reference {ref_a2s:.9g}; c2 amax {st['c2'].abs().max().item()}"
          f"\nend to end: fused vs ref_fused {rel_err(out, ref):.4f}, staged vs ref_fused {rel_err(st['out'], ref):.4f}")
    assert fused_vs_staged < 1e-3, "fused_experts differs from its own stages"
    assert gemm1 < 2e-3, "fp8 GEMM1 accumulation"
    assert gemm2 < 6e-3, "fp8 GEMM2 accumulation"


def ref_fused_a2_scale(x, d1, ids, topk, N, dtype):
    """The a2 scale ref_fused derives: max |bf16(silu(g) * u)| / 448 of its float64 GEMM1."""
    from test_moe_fused_gpu import fake_quant

    xin = fake_quant(x, TENSOR)
    flat = ids.reshape(-1).long()
    amax = 0.0
    for e in flat.unique().tolist():
        sl = (flat == e).nonzero().flatten()
        h = (xin[sl // topk] @ d1[e].T).to(dtype).double()
        c = (torch.nn.functional.silu(h[:, :N]) * h[:, N:]).to(dtype)
        amax = max(amax, c.float().abs().max().item())
    return torch.tensor(amax, dtype=torch.float32).item() / 448.0


if __name__ == "__main__":
    pytest.main([__file__, "-s", "-q"])
