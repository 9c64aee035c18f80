"""The sm_90 int4 w4a16 decode GEMM (tritonsrc/moe/grouped_gemm_wq_hopper.py, routed by
v2src/ops/moe_gemm.cc: the sm_90 default for group sizes that are multiples of 128, any multiple
of 64 with AOTRITON_MOE_WQ_HOPPER=1, off with =0, or forced by config name): against float64
references of the dequantized weights on fresh random data with NaN-poisoned outputs, both K
tiles (group 64 and 128), zero points or not, fp16 and bf16, the routed weight, N not a multiple
of the tile; through fused_experts (split-K GEMM2 included, an expert map dropping slots);
bitwise-repeatable and equal to its forced run; the default route per group size; a clear error when
a forced config names it for a call it cannot serve."""
import pytest
import torch

from test_moe_fused_gpu import DEV, aot, local_ids, make_map, rel_err, routing  # noqa: E402
from test_moe_quant_gpu import INT4, INT8, kwargs_for, quant_w_int4, quant_weights, ref_fused, tol  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")

# One GEMM: fp32 sums of exact products (q - zp times a 16-bit activation), one output rounding.
GEMM_TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def is_wq_hopper(ran):
    return ran is not None and "PREFETCH=" in ran  # fused_moe_gemm_wq's configs have no PREFETCH


def gemm(a, q, s, zp, group, w, ids, top_k, mul, force=None):
    """invoke_grouped_gemm_quant (int4, block size 16) into a NaN-poisoned c; (c, config that ran)."""
    import aotriton

    E, N = q.shape[0], q.shape[1]
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    c = torch.full((ids.numel(), N), float("nan"), dtype=a.dtype, device=DEV)
    ran = aot(aotriton.invoke_grouped_gemm_quant, a, q, c, w if mul else None, srt, eid, ntpp, top_k, 16, INT4, s,
              B_zp=zp, group_size=group, mul_routed_weight=mul, force_config=force)
    return c, ran


def gemm_ref(a, d, w, ids, top_k, mul):
    """float64 C[slot] = a[slot // top_k] @ d[expert]^T (* w[slot])."""
    flat = ids.reshape(-1).long()
    ref = torch.zeros(flat.numel(), d.shape[1], dtype=torch.float64, device=DEV)
    for ex in flat.unique().tolist():
        sl = (flat == ex).nonzero().flatten()
        ref[sl] = a.double()[sl // top_k] @ d[ex].double().T
        if mul:
            ref[sl] *= w.reshape(-1)[sl, None].double()
    return ref


def operands(M, E, topk, K, N, group, with_zp, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    w, ids = routing(M, E, topk, gen)
    a = torch.randn(M, K, generator=gen).to(DEV, dtype)
    q, s, zp, d = quant_w_int4(torch.randn(E, N, K, generator=gen).to(DEV) / K ** 0.5, group, with_zp)
    return a, q, s, zp, d, w, ids


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [64, 128, 256])
@pytest.mark.parametrize("with_zp", [False, True])
@pytest.mark.parametrize("M,mul", [(1, False), (7, True), (33, False)])
def test_gemm_matches_reference_and_the_triton_kernel(dtype, group, with_zp, M, mul, monkeypatch):
    E, topk, K, N = 8, 2, 768, 336  # N: 5.25 tiles of 64 (wrapped rows, masked columns)
    a, q, s, zp, d, w, ids = operands(M, E, topk, K, N, group, with_zp, dtype, seed=M + group + with_zp)
    monkeypatch.setenv("AOTRITON_MOE_WQ_HOPPER", "1")
    c, ran = gemm(a, q, s, zp, group, w, ids, topk, mul)
    assert is_wq_hopper(ran), ran
    ref = gemm_ref(a, d, w, ids, topk, mul)
    assert rel_err(c, ref) < GEMM_TOL[dtype]
    again, _ = gemm(a, q, s, zp, group, w, ids, topk, mul)
    forced, ran_forced = gemm(a, q, s, zp, group, w, ids, topk, mul, force=ran)
    assert ran_forced == ran and torch.equal(c, again) and torch.equal(c, forced)
    monkeypatch.delenv("AOTRITON_MOE_WQ_HOPPER")
    default_c, default_ran = gemm(a, q, s, zp, group, w, ids, topk, mul)
    assert is_wq_hopper(default_ran) == (group % 128 == 0), default_ran  # measured for K tiles of 128 only
    monkeypatch.setenv("AOTRITON_MOE_WQ_HOPPER", "0")
    triton_c, triton_ran = gemm(a, q, s, zp, group, w, ids, topk, mul)
    assert not is_wq_hopper(triton_ran), triton_ran
    assert rel_err(triton_c, ref) < GEMM_TOL[dtype]
    # Both are fp32 sums of the same exact products: they differ by the output rounding at most.
    assert rel_err(c, triton_c.double()) < GEMM_TOL[dtype]


def test_bad_expert_ids_write_zeros(monkeypatch):
    """A block whose expert id is outside [0, E) reads no weights and writes zeros to its rows."""
    import aotriton

    monkeypatch.setenv("AOTRITON_MOE_WQ_HOPPER", "1")
    E, topk, K, N, group = 8, 2, 512, 256, 128
    a, q, s, zp, d, w, ids = operands(5, E, topk, K, N, group, True, torch.bfloat16, seed=3)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    eid[0] = -1
    eid[1] = E  # one past the last expert
    c = torch.full((ids.numel(), N), float("nan"), dtype=a.dtype, device=DEV)
    ran = aot(aotriton.invoke_grouped_gemm_quant, a, q, c, None, srt, eid, ntpp, topk, 16, INT4, s, B_zp=zp,
              group_size=group)
    assert is_wq_hopper(ran), ran
    ref = gemm_ref(a, d, w, ids, topk, False)
    for blk in (0, 1):
        slots = srt[blk * 16:(blk + 1) * 16]
        slots = slots[slots < ids.numel()].long()
        if slots.numel():
            assert torch.equal(c[slots], torch.zeros_like(c[slots]))
            ref[slots] = 0
    assert rel_err(c, ref) < GEMM_TOL[torch.bfloat16]


def _fused_case(M, topk, N, with_map, dtype, with_zp, seed):
    """An int4 fused_experts call's inputs (E 8, K 512, group 128, random routing through an optional
    expert map) and its float64 reference; run(env) calls it with the environment set, into a
    NaN-poisoned output."""
    import aotriton

    E, K, group = 8, 512, 128
    gen = torch.Generator().manual_seed(seed)
    E_ids = 2 * E if with_map else E
    w, ids = routing(M, E_ids, topk, gen)
    emap = make_map(E_ids, E, gen) if with_map else None
    x = torch.randn(M, K, generator=gen).to(DEV, dtype)
    q1, s1, z1, d1 = quant_weights(torch.randn(E, 2 * N, K, generator=gen).to(DEV) / K ** 0.5, INT4, group, with_zp)
    q2, s2, z2, d2 = quant_weights(torch.randn(E, K, N, generator=gen).to(DEV) / N ** 0.5, INT4, group, with_zp)
    kw = kwargs_for(INT4, s1, s2, z1, z2, group)
    ref = ref_fused(x, d1, d2, w, local_ids(ids, emap, E), INT4)

    def run():
        out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
        aot(aotriton.fused_experts, x, q1, q2, w, ids, out=out, expert_map=emap, **kw)
        return out
    return run, ref


@pytest.mark.parametrize("M,topk,N,with_map", [(1, 2, 4096, False), (8, 2, 512, True), (64, 1, 4096, False),
                                                (3, 6, 512, False)])
def test_fused_experts_opted_in(M, topk, N, with_map, monkeypatch):
    """fused_experts int4 with the sm_90 kernel opted in (N = 4096 at decode sizes splits GEMM2's K):
    the float64 reference, and within rounding of the Triton kernel's run."""
    dtype = torch.bfloat16
    run, ref = _fused_case(M, topk, N, with_map, dtype, True, seed=M * 100 + topk + N)
    outs = {}
    for env in ("1", "0"):
        monkeypatch.setenv("AOTRITON_MOE_WQ_HOPPER", env)
        outs[env] = run()
        assert rel_err(outs[env], ref) < tol(dtype, INT4), env
    assert rel_err(outs["1"], outs["0"].double()) < tol(dtype, INT4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,topk,N,with_zp,with_map", [(1, 2, 4096, True, False), (16, 2, 512, False, True),
                                                        (64, 2, 1024, True, False), (5, 3, 256, True, False)])
def test_fused_experts_dot_order_is_bit_identical(dtype, M, topk, N, with_zp, with_map, monkeypatch):
    """fused_experts int4 on sm_90 copies the hidden states into the GEMM's dot order and has
    act_and_mul write GEMM2's input so (X_DOT_ORDER); the MMAs see the same operands as with
    AOTRITON_MOE_WQ_DOT_ORDER=0 (the permutation in registers): the float64 reference, and
    bit-identical outputs (M=1 N=4096 splits GEMM2's K)."""
    run, ref = _fused_case(M, topk, N, with_map, dtype, with_zp, seed=M * 1000 + topk + N + (dtype == torch.float16))
    monkeypatch.delenv("AOTRITON_MOE_WQ_DOT_ORDER", raising=False)
    ordered = run()
    monkeypatch.setenv("AOTRITON_MOE_WQ_DOT_ORDER", "0")
    permuting = run()
    for out in (ordered, permuting):
        assert rel_err(out, ref) < tol(dtype, INT4)
    assert torch.equal(ordered, permuting)


def test_fused_experts_unaligned_hidden_states_are_refused():
    """Hidden states at an odd element offset: refused by name (the int4 GEMMs are built for aligned
    operands), not copied into the dot order; the output is left as it was."""
    import aotriton

    M, E, K, N, group, dtype = 4, 4, 256, 256, 128, torch.bfloat16
    gen = torch.Generator().manual_seed(7)
    w, ids = routing(M, E, 2, gen)
    x = torch.randn(M, K + 8, generator=gen).to(DEV, dtype)[:, 1:K + 1]
    q1, s1, z1, _ = quant_weights(torch.randn(E, 2 * N, K, generator=gen).to(DEV) / K ** 0.5, INT4, group, True)
    q2, s2, z2, _ = quant_weights(torch.randn(E, K, N, generator=gen).to(DEV) / N ** 0.5, INT4, group, True)
    out = torch.full((M, K), float("nan"), dtype=dtype, device=DEV)
    with pytest.raises(ValueError, match="aligned"):
        aotriton.fused_experts(x, q1, q2, w, ids, out=out, **kwargs_for(INT4, s1, s2, z1, z2, group))
    assert out.isnan().all()


def test_forced_config_on_a_call_it_cannot_serve():
    """An int8 call (or a 64-row block) forced onto one of its configs is a clear error; nothing runs."""
    import aotriton

    a, q, s, zp, d, w, ids = operands(8, 4, 2, 256, 128, 128, False, torch.bfloat16, seed=5)
    from python.kernel_rules import config_name
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    name = config_name(rule.tuning.default({"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": False,
                                            "BLOCK_SIZE_M": 16, "BLOCK_SIZE_K": 128, "SPLIT_K": 1,
                                            "HAS_ZP": True}, 90))
    q8, s8, _, _ = quant_weights(torch.randn(4, 128, 256, device=DEV), INT8)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, 4)
    c = torch.full((ids.numel(), 128), float("nan"), dtype=torch.bfloat16, device=DEV)
    with pytest.raises(ValueError, match="fused_moe_gemm_wq_hopper"):
        aotriton.invoke_grouped_gemm_quant(a, q8, c, None, srt, eid, ntpp, 2, 16, INT8, s8, force_config=name)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 64, 4)
    with pytest.raises(ValueError, match="fused_moe_gemm_wq_hopper"):
        aotriton.invoke_grouped_gemm_quant(a, q, c, None, srt, eid, ntpp, 2, 64, INT4, s, group_size=128,
                                           force_config=name)
    assert torch.isnan(c).all()


@pytest.mark.parametrize("split_k", [1, 4])
def test_jit_launcher_matches_the_aot_kernel(split_k, monkeypatch):
    """python/jit/moe_quant.invoke_grouped_gemm_wq_hopper (the tuner's and the experiment's launcher):
    bitwise the AOT kernel's run of the same config unsplit; split into partial rows (as fused_experts
    runs a decode GEMM2), their sum against the reference."""
    import aotriton
    from python.jit.moe_quant import invoke_grouped_gemm_wq_hopper

    E, topk, K, N, group = 8, 1, 1024, 320, 128
    a, q, s, zp, d, w, ids = operands(3, E, topk, K, N, group, True, torch.bfloat16, seed=9)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    jit_c = torch.full((ids.numel() * split_k, N), float("nan"), dtype=a.dtype, device=DEV)
    invoke_grouped_gemm_wq_hopper(a, q, jit_c, w.reshape(-1).contiguous(), srt, eid, ntpp, topk, s, zp, group,
                                  mul_routed_weight=True, split_k=split_k)
    got = jit_c.view(ids.numel(), split_k, N).double().sum(1)
    assert rel_err(got, gemm_ref(a, d, w, ids, topk, True)) < GEMM_TOL[torch.bfloat16]
    if split_k == 1:
        monkeypatch.setenv("AOTRITON_MOE_WQ_HOPPER", "1")
        aot_c, ran = gemm(a, q, s, zp, group, w, ids, topk, True)
        assert is_wq_hopper(ran) and torch.equal(jit_c, aot_c)


def test_splits_past_the_last_k_tile_write_zeros():
    """K = 256 is two K tiles of 128; split four ways, splits 2 and 3 have no tile: they read
    nothing past the weight rows and write zero partial rows (compute-sanitizer: this test under
    memcheck covers the reads)."""
    import aotriton
    from python.jit.moe_quant import invoke_grouped_gemm_wq_hopper

    E, topk, K, N, group = 4, 1, 256, 128, 128
    a, q, s, zp, d, w, ids = operands(5, E, topk, K, N, group, True, torch.bfloat16, seed=13)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    c = torch.full((ids.numel() * 4, N), float("nan"), dtype=a.dtype, device=DEV)
    invoke_grouped_gemm_wq_hopper(a, q, c, w.reshape(-1).contiguous(), srt, eid, ntpp, topk, s, zp, group,
                                  mul_routed_weight=True, split_k=4)
    parts = c.view(ids.numel(), 4, N)
    assert torch.equal(parts[:, 2:], torch.zeros_like(parts[:, 2:]))
    assert rel_err(parts.double().sum(1), gemm_ref(a, d, w, ids, topk, True)) < GEMM_TOL[torch.bfloat16]


def check_config_against_reference(K, group, split_k, with_zp, dtype, seed, **config):
    """The JIT launcher with the rule's default config updated by `config` (which must be in the
    rule's space) on 5 tokens, 8 experts, top-2, N 192, the routed weight with splits: the summed
    partials against the float64 reference on NaN-poisoned output."""
    import aotriton
    from python.jit.moe_quant import invoke_grouped_gemm_wq_hopper, wq_hopper_block_k
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    E, topk, N = 8, 2, 192
    mul = split_k > 1
    a, q, s, zp, d, w, ids = operands(5, E, topk, K, N, group, with_zp, dtype, seed=seed)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    f = {"dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype], "b_dtype": "u8", "MUL_ROUTED_WEIGHT": mul,
         "BLOCK_SIZE_M": 16, "BLOCK_SIZE_K": wq_hopper_block_k(group), "SPLIT_K": split_k, "HAS_ZP": with_zp,
         "X_DOT_ORDER": False}
    config = dict(rule.tuning.default(f, 90), **config)
    assert config in rule.tuning.all_configs(f, 90)
    c = torch.full((ids.numel() * split_k, N), float("nan"), dtype=dtype, device=DEV)
    invoke_grouped_gemm_wq_hopper(a, q, c, w.reshape(-1).contiguous() if mul else None, srt, eid, ntpp, topk, s, zp,
                                  group, config=config, mul_routed_weight=mul, split_k=split_k)
    got = c.view(ids.numel(), split_k, N).double().sum(1)
    assert rel_err(got, gemm_ref(a, d, w, ids, topk, mul)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_zp", [False, True])
@pytest.mark.parametrize("K,group,split_k",
                         [(640, 128, 1), (1024, 128, 4), (1664, 128, 4), (704, 64, 1), (256, 128, 4)])
@pytest.mark.parametrize("distance", [1, 2])
def test_load_distances_match_the_reference(dtype, with_zp, K, group, split_k, distance):
    """LOAD_DISTANCE 1 and 2 (2, the default: activations, scales and zero points two K tiles ahead,
    the loop unrolled by two, its two weight tiles copied into two rings together) on tile counts
    that are odd (5 tiles of 128, 11 of 64, a split of 13 tiles into 4, 4, 4, 1, splits of 1 and of
    none): the masked last odd tile must add nothing."""
    check_config_against_reference(K, group, split_k, with_zp, dtype, K + split_k + with_zp, LOAD_DISTANCE=distance)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_m", [8, 32])
@pytest.mark.parametrize("M,split_k,distance", [(1, 1, 1), (5, 4, 2), (37, 1, 2), (150, 1, 1)])
def test_align_blocks_of_8_and_32_match_the_reference(dtype, block_m, M, split_k, distance):
    """Align blocks of 8 and 32 tokens (wgmma N 8 / 32; an experiment's forms,
    bench/experiments/int4_wgmma.py --block-m 8,16,32) through the JIT launcher: one token, blocks
    that split, experts with several blocks, against the float64 reference (every slot's row must
    be written: NaN poison)."""
    from python.jit.moe import moe_align_block_size  # the build's align takes the GEMMs' block sizes only
    from python.jit.moe_quant import invoke_grouped_gemm_wq_hopper

    E, topk, K, N, group = 8, 2, 1024, 192, 128
    mul = split_k > 1
    a, q, s, zp, d, w, ids = operands(M, E, topk, K, N, group, True, dtype, seed=M + split_k)
    srt, eid, ntpp = moe_align_block_size(ids, block_m, E)
    c = torch.full((ids.numel() * split_k, N), float("nan"), dtype=dtype, device=DEV)
    invoke_grouped_gemm_wq_hopper(a, q, c, w.reshape(-1).contiguous() if mul else None, srt, eid, ntpp, topk, s, zp,
                                  group, config={"BLOCK_SIZE_N": 64, "PREFETCH": 0, "NUM_STAGES": 4, "GROUP_SIZE_M": 16,
                                                 "num_warps": 4, "LOAD_DISTANCE": distance},
                                  mul_routed_weight=mul, split_k=split_k, block_m=block_m)
    got = c.view(ids.numel(), split_k, N).double().sum(1)
    assert rel_err(got, gemm_ref(a, d, w, ids, topk, mul)) < GEMM_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_m", [16, 32])
@pytest.mark.parametrize("M,K,group,split_k,with_zp",
                         [(1, 1024, 128, 1, True), (5, 1664, 128, 4, True), (37, 704, 64, 1, False),
                          (150, 640, 128, 1, True)])
def test_dot_ordered_activations_match_the_reference(dtype, block_m, M, K, group, split_k, with_zp):
    """X_DOT_ORDER (an experiment's form, bench/experiments/int4_wgmma.py --x-dot-order): the
    activations permuted on the host (dot_order_activations) and copied by cp.async beside the
    weights, rows of no token not read. One token, odd tile counts (13 tiles of 128 in 4 splits, 11
    of 64), blocks of 16 and 32, experts with several blocks; NaN-poisoned output against the
    float64 reference of the plain activations. The plain activations through the same form must
    miss it (the permutation is what the kernel reads)."""
    from python.jit.moe import moe_align_block_size
    from python.jit.moe_quant import dot_order_activations, invoke_grouped_gemm_wq_hopper, wq_hopper_block_k

    E, topk, N = 8, 2, 192
    mul = split_k > 1
    a, q, s, zp, d, w, ids = operands(M, E, topk, K, N, group, with_zp, dtype, seed=M + K + block_m)
    srt, eid, ntpp = moe_align_block_size(ids, block_m, E)
    ref = gemm_ref(a, d, w, ids, topk, mul)
    config = {"BLOCK_SIZE_N": 64, "PREFETCH": 0, "NUM_STAGES": 4, "GROUP_SIZE_M": 16, "num_warps": 4,
              "LOAD_DISTANCE": 2}

    def run(x):
        c = torch.full((ids.numel() * split_k, N), float("nan"), dtype=dtype, device=DEV)
        invoke_grouped_gemm_wq_hopper(x, q, c, w.reshape(-1).contiguous() if mul else None, srt, eid, ntpp, topk, s,
                                      zp, group, config=config, mul_routed_weight=mul, split_k=split_k,
                                      block_m=block_m, x_dot_order=True)
        return c.view(ids.numel(), split_k, N).double().sum(1)

    x = dot_order_activations(a, wq_hopper_block_k(group))
    assert rel_err(run(x), ref) < GEMM_TOL[dtype]
    assert not rel_err(run(a), ref) < GEMM_TOL[dtype]
    if block_m == 16:  # the 5-CTA form: single blocks capped at 96 registers (no spills, test_int4_wgmma_order)
        config.update(PAIR_BLOCKS=False, maxnreg=96)
        assert rel_err(run(x), ref) < GEMM_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,E,topk,split_k", [(7, 8, 2, 1), (64, 8, 2, 1), (64, 8, 2, 4), (150, 8, 2, 1),
                                              (300, 2, 2, 1)])
def test_pair_blocks_match_single_blocks_bitwise(dtype, M, E, topk, split_k):
    """PAIR_BLOCKS (X_DOT_ORDER): one program runs two blocks of an expert with each weight tile
    dequantized once. Experts with 1-3 blocks (M 7-150 over 8 experts) and with 19 (M=300 over 2:
    past PAIR_SCAN, where blocks run alone), split into partial rows or not: NaN-poisoned output
    against the float64 reference, and bitwise equal to PAIR_BLOCKS off (the same products in the
    same order). Then two blocks of the longest run get expert ids outside [0, E): both forms write
    zeros there and still agree bitwise everywhere (every block is run exactly once)."""
    import aotriton
    from python.jit.moe_quant import dot_order_activations, invoke_grouped_gemm_wq_hopper

    K, N, group = 1024, 192, 128
    mul = split_k > 1
    a, q, s, zp, d, w, ids = operands(M, E, topk, K, N, group, True, dtype, seed=M + E + split_k)
    srt, eid, ntpp = aotriton.moe_align_block_size(ids, 16, E)
    x = dot_order_activations(a, 128)

    def run(pair, expert_ids):
        c = torch.full((ids.numel() * split_k, N), float("nan"), dtype=dtype, device=DEV)
        config = {"PAIR_BLOCKS": int(pair), "maxnreg": 128 if pair else 0}  # the default, or single blocks
        invoke_grouped_gemm_wq_hopper(x, q, c, w.reshape(-1).contiguous() if mul else None, srt, expert_ids, ntpp,
                                      topk, s, zp, group, config=config, mul_routed_weight=mul, split_k=split_k,
                                      x_dot_order=True)
        return c

    paired = run(True, eid)
    assert rel_err(paired.view(ids.numel(), split_k, N).double().sum(1), gemm_ref(a, d, w, ids, topk, mul)) < \
        GEMM_TOL[dtype]
    assert torch.equal(paired, run(False, eid))

    blocks = int(ntpp.item()) // 16
    ex = eid[:blocks].long()
    longest = int(torch.bincount(ex, minlength=E).argmax())
    run_blocks = (ex == longest).nonzero().flatten().tolist()
    if len(run_blocks) < 3:
        return
    bad = eid.clone()
    bad[run_blocks[1]] = -1
    bad[run_blocks[-1]] = E
    paired = run(True, bad)
    assert torch.equal(paired, run(False, bad))
    for b in (run_blocks[1], run_blocks[-1]):
        slots = srt[b * 16:(b + 1) * 16].long()
        slots = slots[slots < ids.numel()]
        rows = (slots[:, None] * split_k + torch.arange(split_k, device=DEV)).flatten()
        assert torch.equal(paired[rows], torch.zeros_like(paired[rows]))


def expected_pair_roles(eids, ntpp_blocks):
    """_pair_role's rule in Python: a block's position in its expert's run is found from the 8 ids
    before it; odd positions follow (2), even ones lead (1) when the next block (below
    num_tokens_post_padded) is the same expert's; 8 or more blocks into a run, alone (0)."""
    roles = []
    for b, e in enumerate(eids):
        before = [eids[b - 8 + j] if b - 8 + j >= 0 else -1 for j in range(8)]
        others = [j for j in range(8) if before[j] != e]
        position = 7 - max(others) if others else None
        if position is None:
            roles.append(0)
        elif position % 2:
            roles.append(2)
        else:
            roles.append(1 if b + 1 < min(ntpp_blocks, len(eids)) and eids[b + 1] == e else 0)
    return roles


@pytest.mark.parametrize("cut", [0, 1])
def test_pair_roles_run_every_block_once(cut):
    """The pair decision on the device (what test_pair_blocks_match_single_blocks_bitwise cannot see:
    outputs are the same whichever program runs a block): runs of 1-19 blocks, against the rule in
    Python, and every block run exactly once: a leader's next block follows, a follower's previous
    block leads. `cut` stops num_tokens_post_padded one block short (the last block's pair is not taken)."""
    from pair_roles_kernel import pair_roles_kernel

    runs = [1, 2, 3, 4, 7, 8, 9, 10, 19, 1, 2]
    eids = [e for e, n in enumerate(runs) for _ in range(n)]
    blocks = len(eids) - cut
    expert_ids = torch.tensor(eids, dtype=torch.int32, device=DEV)
    ntpp = torch.tensor([blocks * 16], dtype=torch.int32, device=DEV)
    roles = torch.full((len(eids), ), -7, dtype=torch.int32, device=DEV)
    pair_roles_kernel[(len(eids), )](expert_ids, ntpp, roles, len(eids) * 16, num_warps=4)
    got = roles.tolist()[:blocks]
    assert got == expected_pair_roles(eids, blocks)[:blocks]
    for b, r in enumerate(got):
        if r == 1:
            assert b + 1 < blocks and got[b + 1] == 2 and eids[b + 1] == eids[b]
        if r == 2:
            assert b > 0 and got[b - 1] == 1
    assert got.count(1) >= 10  # pairs are taken: every run of 2-8 leads at least one
