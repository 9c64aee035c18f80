"""The sm_90 MoE grouped GEMM (tritonsrc/moe/grouped_gemm_hopper.py, routed by
v2src/ops/moe_gemm_hopper.cc): forced, against float64 references on fresh
random data with NaN-poisoned outputs, in both GEMM forms of fused_experts
and through fused_experts itself; the automatic choice (where the rule
serves when opted in with AOTRITON_MOE_HOPPER=1, and not elsewhere); calls it cannot serve
(not TMA-compatible, unaligned) falling back to the Triton kernel, or a clear
error when forced; bad expert and slot ids; bitwise-repeatable output; the
JIT launcher equal to the AOT kernel."""

import pytest
import torch


from test_moe_fused_gpu import DEV, aot, local_ids, make_map, ref_fused, rel_err, routing, tol  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")

BS = 128  # the block size the Hopper kernel serves (rules_moe_hopper.BLOCK_M)
# Single GEMMs: fp32 accumulation of exact products, then one output rounding.
GEMM_TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def hopper_config():
    """Name of the rule's default config (every functional has the same)."""
    from python.kernel_rules import config_name
    from python.rules_moe_hopper import fused_moe_gemm_hopper as rule

    return config_name(rule.tuning.default({"dtype": "bf16", "MUL_ROUTED_WEIGHT": False}, 90))


def is_hopper(ran):
    return "NUM_STAGES=" in ran  # the Triton kernel's configs say num_stages


def gemm(a, b, w, ids, top_k, mul, bs=BS, force=None, c=None):
    """invoke_fused_moe_kernel into a NaN-poisoned c [slots, N]; returns (c, config that ran)."""
    import aotriton

    E, N = b.shape[0], b.shape[1]
    s, e, n = aotriton.moe_align_block_size(ids, bs, E)
    if c is None:
        c = torch.full((ids.numel(), N), float("nan"), dtype=a.dtype, device=DEV)
    ran = aot(aotriton.invoke_fused_moe_kernel, a, b, c, w if mul else None, s, e, n, top_k, bs,
              mul_routed_weight=mul, force_config=force)
    return c, ran


def gemm_ref(a, b, w, ids, top_k, mul):
    flat = ids.reshape(-1).long()
    ref = torch.zeros(flat.numel(), b.shape[1], dtype=torch.float64, device=DEV)
    a64, b64 = a.double(), b.double()
    for ex in flat.unique().tolist():
        sl = (flat == ex).nonzero().flatten()
        ref[sl] = a64[sl // top_k] @ b64[ex].T
        if mul:
            ref[sl] *= w.reshape(-1)[sl, None].double()
    return ref


def operands(M, E, topk, N, K, dtype, form, seed):
    """(a, b, w, ids, top_k, mul) of GEMM1 (x [M, K] gathered by token, no
    weights) or GEMM2 (one row per slot, top_k 1, routed weights)."""
    gen = torch.Generator().manual_seed(seed)
    w, ids = routing(M, E, topk, gen)
    rows, top_k, mul = (M, topk, False) if form == "gemm1" else (M * topk, 1, True)
    a = torch.randn(rows, K, generator=gen).to(DEV, dtype)
    b = (torch.randn(E, N, K, generator=gen) / K ** 0.5).to(DEV, dtype)
    return a, b, w, ids, top_k, mul


# N = 384: a 256-wide tile crosses into the next expert's rows (masked);
# K = 336: a K tail of 16 (zero-filled by TMA and the masked gather).
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
@pytest.mark.parametrize("E,topk", [(8, 1), (8, 2), (64, 6)])
@pytest.mark.parametrize("M", [1, 33, 512, 4096])
def test_forced_matches_reference(M, E, topk, form, dtype):
    a, b, w, ids, top_k, mul = operands(M, E, topk, 384, 336, dtype, form, seed=M * 7 + E + topk)
    c, ran = gemm(a, b, w, ids, top_k, mul, force=hopper_config())
    assert ran == hopper_config()
    assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,E,topk,with_map", [(33, 8, 2, False), (512, 8, 2, False), (512, 64, 6, True),
                                               (4096, 8, 2, False)])
def test_fused_experts_both_gemms_forced(M, E, topk, with_map, dtype):
    """fused_experts with both GEMMs on the Hopper kernel (force_config
    applies to the two GEMM launches): GEMM1 [E, 2N, K] over gathered tokens,
    GEMM2 [E, K, N] per slot with the routed weights."""
    import aotriton

    K, N = 336, 192  # GEMM2's output width K crosses experts, GEMM1's 2N = 384 too
    gen = torch.Generator().manual_seed(M + E)
    E_ids = 2 * E if with_map else E
    w, ids = routing(M, E_ids, topk, gen)
    emap = make_map(E_ids, E, gen) if with_map else None
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    w1 = (torch.randn(E, 2 * N, K, generator=gen) / K ** 0.5).to(DEV, dtype)
    w2 = (torch.randn(E, K, N, generator=gen) / N ** 0.5).to(DEV, dtype)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    aot(aotriton.fused_experts, x, w1, w2, w, ids, expert_map=emap, out=out, block_size=BS,
        force_config=hopper_config())
    ref = ref_fused(x, w1.double(), w2.double(), w, local_ids(ids, emap, E))
    assert rel_err(out, ref) < tol(dtype)


def _eligible(dtype=torch.bfloat16, seed=1):
    """A GEMM1 the rule serves: 128 slots per expert, block size 128 (the
    operator's own choice), N >= kMoeHopperMinN (1024)."""
    import aotriton

    M, E, topk = 512, 8, 2
    assert aotriton.moe_gemm_block_size(M, topk=topk, num_experts=E) == BS
    return operands(M, E, topk, 1024, 512, dtype, "gemm1", seed)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_automatic_choice_runs_it_where_the_rule_serves(dtype, monkeypatch):
    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "1")  # also the default
    a, b, w, ids, top_k, mul = _eligible(dtype)
    c, ran = gemm(a, b, w, ids, top_k, mul)
    assert is_hopper(ran), ran
    assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[dtype]
    forced, _ = gemm(a, b, w, ids, top_k, mul, force=ran)
    assert torch.equal(c, forced)


def test_automatic_choice_keeps_the_triton_kernel_elsewhere(monkeypatch):
    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "1")
    # Block size 64 (the operator's choice for few slots per expert).
    a, b, w, ids, top_k, mul = _eligible()
    c, ran = gemm(a, b, w, ids, top_k, mul, bs=64)
    assert not is_hopper(ran), ran
    assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[torch.bfloat16]
    # Block size 128 but fewer than kMoeHopperMinTokensPerExpert slots per expert,
    # or N below kMoeHopperMinN.
    for M, E, topk, N in ((33, 64, 6, 1024), (512, 8, 2, 384)):
        a, b, w, ids, top_k, mul = operands(M, E, topk, N, 336, torch.bfloat16, "gemm2", seed=2)
        c, ran = gemm(a, b, w, ids, top_k, mul)
        assert not is_hopper(ran), (M, E, topk, N, ran)
        assert rel_err(c, gemm_ref(a, b, w, ids, top_k, mul)) < GEMM_TOL[torch.bfloat16]


@pytest.mark.parametrize("on_env", ["", "1"])
def test_env_var_opts_out(monkeypatch, on_env):
    """By default (or AOTRITON_MOE_HOPPER=1) an eligible call runs the Hopper
    kernel; AOTRITON_MOE_HOPPER=0 (read per call) the Triton kernel; same
    results within rounding."""
    a, b, w, ids, top_k, mul = _eligible()
    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "0")
    off, ran_off = gemm(a, b, w, ids, top_k, mul)
    if on_env:
        monkeypatch.setenv("AOTRITON_MOE_HOPPER", on_env)
    else:
        monkeypatch.delenv("AOTRITON_MOE_HOPPER", raising=False)
    on, ran_on = gemm(a, b, w, ids, top_k, mul)
    assert is_hopper(ran_on) and not is_hopper(ran_off), (ran_on, ran_off)
    ref = gemm_ref(a, b, w, ids, top_k, mul)
    assert rel_err(off, ref) < GEMM_TOL[torch.bfloat16] and rel_err(on, ref) < GEMM_TOL[torch.bfloat16]


def test_fused_experts_automatic_is_the_forced_kernel(monkeypatch):
    """fused_experts at an eligible shape, opted in, runs both GEMMs on the
    Hopper kernel: bitwise the forced run."""
    import aotriton

    monkeypatch.setenv("AOTRITON_MOE_HOPPER", "1")
    M, E, topk, K, N = 512, 8, 2, 1024, 512  # both GEMMs at least 1024 wide
    gen = torch.Generator().manual_seed(11)
    w, ids = routing(M, E, topk, gen)
    x = torch.randn(M, K, generator=gen).to(DEV, torch.bfloat16)
    w1 = (torch.randn(E, 2 * N, K, generator=gen) / K ** 0.5).to(DEV, torch.bfloat16)
    w2 = (torch.randn(E, K, N, generator=gen) / N ** 0.5).to(DEV, torch.bfloat16)
    auto = aot(aotriton.fused_experts, x, w1, w2, w, ids)
    forced = aot(aotriton.fused_experts, x, w1, w2, w, ids, block_size=BS, force_config=hopper_config())
    assert torch.equal(auto, forced)
    assert rel_err(auto, ref_fused(x, w1.double(), w2.double(), w, ids.long())) < tol(torch.bfloat16)


def _not_served_weights(kind, E, N, K, dtype, gen):
    """Views (scaled before slicing, so they stay views)."""
    if kind == "experts_apart":  # stride(0) != N * stride(1): no [E * N, K] view
        b = (torch.randn(E, N + 16, K, generator=gen) / K ** 0.5).to(DEV, dtype)[:, :N]
        assert b.stride(0) != N * b.stride(1)
        return b
    flat = (torch.randn(E * N * K + 4, generator=gen) / K ** 0.5).to(DEV, dtype)
    b = flat[4:].view(E, N, K)  # base 8 bytes off a 16-byte boundary
    assert b.data_ptr() % 16 == 8
    return b


@pytest.mark.parametrize("kind", ["experts_apart", "misaligned_base", "k_not_16"])
def test_calls_it_cannot_serve_fall_back(kind):
    """Not TMA-compatible or not aligned: the automatic choice runs the Triton
    kernel (still correct); forcing a Hopper config is a clear error."""
    M, E, topk, N = 512, 8, 2, 1024
    K = 200 if kind == "k_not_16" else 512
    gen = torch.Generator().manual_seed(21)
    w, ids = routing(M, E, topk, gen)
    a = torch.randn(M, K, generator=gen).to(DEV, torch.bfloat16)
    if kind == "k_not_16":
        b = (torch.randn(E, N, K, generator=gen) / K ** 0.5).to(DEV, torch.bfloat16)
    else:
        b = _not_served_weights(kind, E, N, K, torch.bfloat16, gen)
    c, ran = gemm(a, b, w, ids, topk, False)
    assert not is_hopper(ran), ran
    assert rel_err(c, gemm_ref(a, b, w, ids, topk, False)) < GEMM_TOL[torch.bfloat16]
    with pytest.raises(Exception, match="fused_moe_gemm_hopper"):
        gemm(a, b, w, ids, topk, False, force=hopper_config())


def check_bad_expert_and_slot_ids(launch):
    """Expert ids outside [0, E) give zeros (even where the routed weight is NaN); a
    negative slot is neither read nor written; rows outside c stay put. launch(a, b,
    c, w, sorted_ids, expert_ids, ntpp, topk) runs the kernel under test (GEMM2 form)."""
    import aotriton

    M, topk, E, N, K = 400, 2, 8, 128, 256
    torch.manual_seed(8)
    ids = torch.stack([torch.randperm(E, device=DEV)[:topk] for _ in range(M)]).to(torch.int32)
    a = (torch.randn(M, K, device=DEV) / K ** 0.5).half()
    storage = torch.ones(E + 4, N, K, dtype=torch.float16, device=DEV)  # guard experts: ones
    b = storage[2:2 + E]
    b.copy_(torch.randn(E, N, K, device=DEV).half())
    w = torch.rand(M * topk, device=DEV) + 0.5
    s, e, n = aotriton.moe_align_block_size(ids, BS, E)
    nblocks = int(n[0]) // BS
    assert nblocks > 4
    e2, s2 = e.clone(), s.clone()
    e2[0], e2[1], e2[2] = E, -2, 2**31 - 1
    first = s2[:BS]
    w[first[first < M * topk].long()] = float("nan")
    victim = int(s2[BS * 3])
    s2[BS * 3] = -1
    c_full = torch.full((M * topk + 2, N), float("nan"), dtype=torch.float16, device=DEV)
    c = c_full[1:1 + M * topk]
    launch(a, b, c, w, s2, e2, n, topk)
    torch.cuda.synchronize()
    assert torch.isnan(c_full[0]).all() and torch.isnan(c_full[-1]).all(), "guard row of c written"
    slots = s2[:BS * nblocks].reshape(nblocks, BS)
    for blk in range(nblocks):
        rows = slots[blk][(slots[blk] >= 0) & (slots[blk] < M * topk)].long()
        if blk < 3:
            assert (c[rows] == 0).all(), f"block {blk}: bad expert id must give zeros"
            continue
        want = (a.double()[rows // topk] @ b[int(e2[blk])].double().T) * w[rows, None].double()
        assert (c[rows].double() - want).abs().max() < 2e-2
    assert torch.isnan(c[victim]).all()


def test_bad_expert_and_slot_ids():
    import aotriton

    check_bad_expert_and_slot_ids(lambda a, b, c, w, s, e, n, topk: aotriton.invoke_fused_moe_kernel(
        a, b, c, w, s, e, n, topk, BS, mul_routed_weight=True, force_config=hopper_config()))


def test_bitwise_repeatable():
    a, b, w, ids, top_k, mul = operands(4096, 8, 2, 384, 336, torch.bfloat16, "gemm2", seed=31)
    first, _ = gemm(a, b, w, ids, top_k, mul, force=hopper_config())
    for _ in range(3):
        again, _ = gemm(a, b, w, ids, top_k, mul, force=hopper_config())
        assert torch.equal(first, again)


@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
def test_jit_launcher_matches_the_aot_kernel(form):
    """python/jit/moe_gemm_hopper.py (the tuner's launcher) passes
    the same descriptor and arguments as the AOT operator: bitwise equal."""
    import aotriton
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper

    a, b, w, ids, top_k, mul = operands(512, 8, 2, 384, 336, torch.bfloat16, form, seed=41)
    aot_c, ran = gemm(a, b, w, ids, top_k, mul, force=hopper_config())
    s, e, n = aotriton.moe_align_block_size(ids, BS, b.shape[0])
    jit_c = torch.full_like(aot_c, float("nan"))
    cfg = {k: int(v) for k, v in (kv.split("=") for kv in ran.split(","))}
    invoke_grouped_gemm_hopper(a, b, jit_c, w.reshape(-1), s, e, n, top_k, cfg, mul_routed_weight=mul)
    assert torch.equal(aot_c, jit_c)
