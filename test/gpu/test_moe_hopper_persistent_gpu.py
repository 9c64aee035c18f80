"""The persistent sm_90 MoE grouped GEMM (tritonsrc/moe/grouped_gemm_hopper_persistent.py):
through its JIT launcher against float64 references on NaN-poisoned outputs (tiles
crossing an expert's end, K tails, few programs walking many tiles so ring phases
wrap across tiles), bitwise equal to the per-tile kernel (the same wgmma sequence
per tile), bad expert and slot ids; and the operator's route (v2src/ops/moe_gemm_hopper.cc:
by default or AOTRITON_MOE_HOPPER=1, from kMoeHopperPersistentMinTokensPerExpert slots per expert),
bitwise the JIT launcher's result."""
import pytest
import torch

from test_moe_fused_gpu import DEV, aot, ref_fused, rel_err, routing, tol  # noqa: E402
from test_moe_hopper_gpu import (BS, GEMM_TOL, check_bad_expert_and_slot_ids, gemm, gemm_ref, is_hopper,  # noqa: E402
                                 operands)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")


def persistent(a, b, w, ids, top_k, mul, num_programs=None, config=None):
    import aotriton
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper_persistent

    s, e, n = aotriton.moe_align_block_size(ids, BS, b.shape[0])
    c = torch.full((ids.numel(), b.shape[1]), float("nan"), dtype=a.dtype, device=DEV)
    invoke_grouped_gemm_hopper_persistent(a, b, c, w.reshape(-1) if mul else None, s, e, n, top_k, config,
                                          mul_routed_weight=mul, num_programs=num_programs)
    return c


# N = 384: a 256-wide tile crosses into the next expert's rows (masked); K = 336: a K tail.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
@pytest.mark.parametrize("M,E,topk", [(33, 8, 2), (512, 8, 2), (4096, 8, 2), (512, 64, 6)])
@pytest.mark.parametrize("num_programs", [None, 3])
def test_matches_reference(M, E, topk, form, dtype, num_programs):
    a, b, w, ids, top_k, mul = operands(M, E, topk, 384, 336, dtype, form, seed=M * 5 + E + topk)
    c = persistent(a, b, w, ids, top_k, mul, num_programs)
    assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("config", [None, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=16, NUM_STAGES=5,
                                               num_warps=4)])
def test_bitwise_the_per_tile_kernel(config):
    import aotriton
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper

    a, b, w, ids, top_k, mul = operands(2048, 8, 2, 1024, 512, torch.bfloat16, "gemm2", seed=3)
    c = persistent(a, b, w, ids, top_k, mul, config=config)
    s, e, n = aotriton.moe_align_block_size(ids, BS, b.shape[0])
    tile = torch.full_like(c, float("nan"))
    invoke_grouped_gemm_hopper(a, b, tile, w.reshape(-1), s, e, n, top_k, config, mul_routed_weight=mul)
    assert torch.equal(c, tile)


def test_bad_expert_and_slot_ids():
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper_persistent

    # Two programs: each walks several tiles, bad ones among them.
    check_bad_expert_and_slot_ids(lambda a, b, c, w, s, e, n, topk: invoke_grouped_gemm_hopper_persistent(
        a, b, c, w, s, e, n, topk, mul_routed_weight=True, num_programs=2))


@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
def test_operator_route_is_the_persistent_kernel_when_opted_in(form, monkeypatch):
    """2048 tokens, top-2 of 8 experts: 512 slots per expert, the persistent route
    (AOTRITON_MOE_HOPPER=1): a Gluon config ran, and the output is bitwise the JIT
    launcher's (same descriptor, arguments and SM count)."""
    from python import rules_moe_hopper

    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "1")
    a, b, w, ids, top_k, mul = operands(2048, 8, 2, 1024, 512, torch.bfloat16, form, seed=17)
    assert ids.numel() // 8 >= rules_moe_hopper.PERSISTENT_MIN_TOKENS_PER_EXPERT
    c, ran = gemm(a, b, w, ids, top_k, mul)
    assert is_hopper(ran), ran
    cfg = {k: int(v) for k, v in (kv.split("=") for kv in ran.split(","))}
    assert torch.equal(c, persistent(a, b, w, ids, top_k, mul, config=cfg))
    assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[torch.bfloat16]


def test_fused_experts_opted_in_at_a_persistent_shape(monkeypatch):
    import aotriton

    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "1")
    M, E, topk, K, N = 2048, 8, 2, 1024, 512  # 512 slots per expert, both GEMMs 1024 wide
    gen = torch.Generator().manual_seed(23)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, torch.bfloat16)
    w1 = (torch.randn(E, 2 * N, K, generator=gen) / K ** 0.5).to(DEV, torch.bfloat16)
    w2 = (torch.randn(E, K, N, generator=gen) / N ** 0.5).to(DEV, torch.bfloat16)
    out = aot(aotriton.fused_experts, x, w1, w2, w, ids)
    assert rel_err(out, ref_fused(x, w1.double(), w2.double(), w, ids.long())) < tol(torch.bfloat16)
