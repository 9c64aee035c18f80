"""The sm_90 fp8 MoE grouped GEMM (tritonsrc/moe/grouped_gemm_hopper_fp8.py, through
its JIT launcher python/jit/moe_gemm_hopper.py): per-tensor, 128x128 block and
per-channel scales against the float64 product of the same quantized operands,
on fresh random data with NaN-poisoned outputs; K and N not multiples of the
tile; both GEMM forms of fused_experts (gathered tokens with top_k, and routed
weights); bad expert ids write zeros and read nothing."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")

DEV = "cuda"
FP8 = torch.float8_e4m3fn
# One output rounding (bf16: 2^-8 relative) over fp32 sums of exact fp8 products;
# the fp8 wgmma adds a 128-wide K tile in reduced precision before the fp32 promotion.
TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3}


def quantize(x, w, quant):
    """(a fp8, a_scale, b fp8, b_scale, a dequantized fp64, b dequantized fp64) as fused_experts quantizes."""
    from python.jit import moe as mj
    from python.tune_moe import _quant_block

    if quant == 1:
        a_s = (x.float().abs().amax().clamp(min=1e-10) / 448.0).reshape(1)
        a = mj.per_tensor_quant_fp8(x, a_s)
        b_s = w.float().abs().amax((1, 2)).clamp(min=1e-10) / 448.0
        b = (w.float() / b_s[:, None, None]).to(FP8)
        return a, a_s, b, b_s, a.double() * a_s.double(), b.double() * b_s.double()[:, None, None]
    if quant == 2:
        a, a_s = mj.per_token_group_quant_fp8(x)
        b, b_s = _quant_block(w)
        K, N = x.shape[1], w.shape[1]
        a_deq = a.double() * a_s.double().repeat_interleave(128, 1)[:, :K]
        b_deq = b.double() * b_s.double().repeat_interleave(128, 1).repeat_interleave(128, 2)[:, :N, :K]
        return a, a_s, b, b_s, a_deq, b_deq
    a_s = x.float().abs().amax(1).clamp(min=1e-10) / 448.0
    a = (x.float() / a_s[:, None]).to(FP8)
    b_s = w.float().abs().amax(2).clamp(min=1e-10) / 448.0
    b = (w.float() / b_s[:, :, None]).to(FP8)
    return a, a_s, b, b_s, a.double() * a_s.double()[:, None], b.double() * b_s.double()[:, :, None]


def operands(quant, M, E, top_k, N, K, form, dtype=torch.bfloat16, seed=0):
    """Fresh random routing, activations, weights and routed weights, quantized as fused_experts does."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    ids = torch.rand(M, E, device=DEV, generator=g).topk(top_k, dim=-1).indices.to(torch.int32)
    rows, gather = (M, top_k) if form == "gemm1" else (M * top_k, 1)
    x = torch.randn(rows, K, device=DEV, generator=g).to(dtype)
    w = (torch.randn(E, N, K, device=DEV, generator=g) / K ** 0.5).to(dtype)
    tw = torch.rand(M * top_k, device=DEV, generator=g) + 0.1
    return ids, gather, tw, quantize(x, w, quant)


def reference(ids, gather, tw, mul, a_deq, b_deq):
    """float64 product of the dequantized operands per slot (times the routed weight for GEMM2)."""
    ref = torch.zeros(ids.numel(), b_deq.shape[1], dtype=torch.float64, device=DEV)
    flat = ids.reshape(-1).long()
    for ex in flat.unique().tolist():
        sl = (flat == ex).nonzero().flatten()
        ref[sl] = a_deq[sl // gather] @ b_deq[ex].T
    if mul:
        ref *= tw.double()[:, None]
    return ref


def run(quant, M, E, top_k, N, K, form, dtype=torch.bfloat16, seed=0, bad_expert=None, block_n=None,
        num_programs=0):
    """num_programs: 0 the per-tile kernel; None (one per SM) or n the persistent form."""
    from python.jit import moe as mj
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper_fp8

    ids, gather, tw, (a, a_s, b, b_s, a_deq, b_deq) = operands(quant, M, E, top_k, N, K, form, dtype, seed)
    s, e, n = mj.moe_align_block_size(ids, 128, E)
    if bad_expert is not None:
        e[0] = bad_expert
    c = torch.full((M * top_k, N), float("nan"), dtype=dtype, device=DEV)
    mul = form == "gemm2"
    config = None
    if block_n:
        from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8 as rule
        f = {"dtype": {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype], "QUANT": quant, "MUL_ROUTED_WEIGHT": mul}
        config = dict(rule.tuning.default(f, 90), BLOCK_N=block_n, NUM_STAGES=4)
    invoke_grouped_gemm_hopper_fp8(a, b, c, a_s, b_s, tw if mul else None, s, e, n, gather, quant, config,
                                   mul_routed_weight=mul, num_programs=num_programs)
    torch.cuda.synchronize()
    return c, reference(ids, gather, tw, mul, a_deq, b_deq), s


def rel_err(c, ref):
    return ((c.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("block_n", [128, 256])
@pytest.mark.parametrize("quant", [1, 2, 3])
@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
@pytest.mark.parametrize("M,E,top_k,N,K", [(300, 8, 2, 384, 512), (77, 16, 4, 272, 528), (1024, 8, 2, 256, 1024)])
def test_matches_the_float64_product_of_the_quantized_operands(quant, form, M, E, top_k, N, K, block_n):
    # N 384 and 272 with 256-wide tiles: a last tile whose second half is partly or wholly past N.
    c, ref, _ = run(quant, M, E, top_k, N, K, form, seed=M + N + quant, block_n=block_n)
    assert torch.isfinite(c).all(), "every slot written"
    assert rel_err(c, ref) < TOL[torch.bfloat16]


def test_fp16_output():
    c, ref, _ = run(2, 200, 8, 2, 256, 512, "gemm2", dtype=torch.float16, seed=5)
    assert torch.isfinite(c).all()
    assert rel_err(c, ref) < TOL[torch.float16]


@pytest.mark.parametrize("block_n", [128, 256])
@pytest.mark.parametrize("bad", [-1, 8, 1 << 30])
@pytest.mark.parametrize("quant", [1, 2, 3])
def test_bad_expert_id_writes_zeros(bad, quant, block_n):
    c, ref, s = run(quant, 300, 8, 2, 256, 512, "gemm1", seed=7, bad_expert=bad, block_n=block_n)
    block = s[:128].long()
    block = block[block < c.shape[0]]
    assert torch.equal(c[block].float(), torch.zeros_like(c[block].float())), "the bad block's rows are zeros"
    rest = torch.ones(c.shape[0], dtype=torch.bool, device=DEV)
    rest[block] = False
    assert torch.isfinite(c).all()
    assert ((c[rest].double() - ref[rest]).norm() / ref[rest].norm()).item() < TOL[torch.bfloat16]


# ------------------------------------------- the persistent form (grouped_gemm_hopper_fp8_persistent.py)
@pytest.mark.parametrize("num_programs", [None, 3])
@pytest.mark.parametrize("quant", [1, 2, 3])
@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
@pytest.mark.parametrize("M,E,top_k,N,K", [(300, 8, 2, 384, 512), (1024, 8, 2, 256, 1024)])
def test_persistent_form_is_bitwise_the_per_tile_kernel(quant, form, M, E, top_k, N, K, num_programs):
    """The same per-tile bodies over a K-step counter that runs across tiles (3 programs:
    many tiles each, the ring's phases wrapping between tiles)."""
    tile, ref, _ = run(quant, M, E, top_k, N, K, form, seed=M + quant)
    persistent, _, _ = run(quant, M, E, top_k, N, K, form, seed=M + quant, num_programs=num_programs)
    assert torch.isfinite(persistent).all() and rel_err(persistent, ref) < TOL[torch.bfloat16]
    assert torch.equal(persistent, tile)


@pytest.mark.parametrize("bad", [-1, 8, 1 << 30])
def test_persistent_form_bad_expert_id_writes_zeros(bad):
    c, ref, s = run(2, 300, 8, 2, 256, 512, "gemm1", seed=7, bad_expert=bad, num_programs=2)
    block = s[:128].long()
    block = block[block < c.shape[0]]
    assert torch.equal(c[block].float(), torch.zeros_like(c[block].float()))
    rest = torch.ones(c.shape[0], dtype=torch.bool, device=DEV)
    rest[block] = False
    assert torch.isfinite(c).all() and rel_err(c[rest], ref[rest]) < TOL[torch.bfloat16]


# ---------------------------------------------------------------- through the AOT operator
def aot_gemm(quant, M, E, top_k, N, K, form, env=None, seed=3, force=None):
    """invoke_fused_moe_kernel on fp8 operands with block size 128 into a NaN-poisoned c:
    (c, reference, config that ran, JIT inputs)."""
    import os

    aotriton = pytest.importorskip("aotriton")
    ids, gather, tw, (a, a_s, b, b_s, a_deq, b_deq) = operands(quant, M, E, top_k, N, K, form, seed=seed)
    s, e, n = aotriton.moe_align_block_size(ids, 128, E)
    c = torch.full((M * top_k, N), float("nan"), dtype=torch.bfloat16, device=DEV)
    mul = form == "gemm2"
    old = os.environ.pop("AOTRITON_MOE_HOPPER", None)
    if env is not None:
        os.environ["AOTRITON_MOE_HOPPER"] = env
    try:
        # Per channel, the operator takes a_scale [rows, 1] and b_scale [E, N, 1].
        op_a_s, op_b_s = (a_s.reshape(-1, 1), b_s.unsqueeze(-1)) if quant == 3 else (a_s, b_s)
        ran = aotriton.invoke_fused_moe_kernel(a, b, c, tw if mul else None, s, e, n, gather, 128,
                                               mul_routed_weight=mul, quant=quant, A_scale=op_a_s, B_scale=op_b_s,
                                               force_config=force)
    except RuntimeError as err:
        if "not in this build" in str(err):
            pytest.skip(str(err))
        raise
    finally:
        os.environ.pop("AOTRITON_MOE_HOPPER", None)
        if old is not None:
            os.environ["AOTRITON_MOE_HOPPER"] = old
    torch.cuda.synchronize()
    ref = reference(ids, gather, tw, mul, a_deq, b_deq)
    return c, ref, ran, (a, b, a_s, b_s, tw if mul else None, s, e, n, gather, mul)


def is_gluon(ran):
    return "NUM_STAGES=" in ran  # the Triton kernel's configs say num_stages


@pytest.mark.parametrize("quant", [1, 2, 3])
@pytest.mark.parametrize("form", ["gemm1", "gemm2"])
def test_operator_runs_it_by_default_from_128_slots_per_expert(quant, form):
    # 1024 tokens, top-2 of 8 experts: 256 slots per expert on average.
    c, ref, ran, _ = aot_gemm(quant, 1024, 8, 2, 1280, 1024, form)
    assert is_gluon(ran), ran
    assert torch.isfinite(c).all() and rel_err(c, ref) < TOL[torch.bfloat16]
    # Opted out, the Triton kernel computes the same product.
    c0, ref0, ran0, _ = aot_gemm(quant, 1024, 8, 2, 1280, 1024, form, env="0")
    assert not is_gluon(ran0), ran0
    assert torch.isfinite(c0).all() and rel_err(c0, ref0) < TOL[torch.bfloat16]


def test_operator_keeps_the_triton_kernel_below_128_slots_per_expert():
    c, ref, ran, _ = aot_gemm(1, 256, 8, 2, 1280, 1024, "gemm1")  # 64 slots per expert
    assert not is_gluon(ran), ran
    assert rel_err(c, ref) < TOL[torch.bfloat16]


@pytest.mark.parametrize("quant", [1, 2])
def test_jit_launcher_matches_the_aot_kernel(quant):
    """python/jit/moe_gemm_hopper.py passes the operator's descriptor and arguments: bitwise equal."""
    from python.jit.moe_gemm_hopper import invoke_grouped_gemm_hopper_fp8

    c, _, ran, (a, b, a_s, b_s, tw, s, e, n, gather, mul) = aot_gemm(quant, 1024, 8, 2, 1280, 1024, "gemm2")
    assert is_gluon(ran), ran
    cfg = {k: int(v) for k, v in (kv.split("=") for kv in ran.split(","))}
    jit_c = torch.full_like(c, float("nan"))
    invoke_grouped_gemm_hopper_fp8(a, b, jit_c, a_s, b_s, tw, s, e, n, gather, quant, cfg, mul_routed_weight=mul)
    assert torch.equal(c, jit_c)


def test_forced_config_on_a_call_it_cannot_serve_is_a_clear_error():
    from python.kernel_rules import config_name
    from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8 as rule

    name = config_name(rule.tuning.default({"dtype": "bf16", "QUANT": 1, "MUL_ROUTED_WEIGHT": False}, 90))
    aotriton = pytest.importorskip("aotriton")
    g = torch.Generator(device=DEV).manual_seed(1)
    ids = torch.rand(64, 8, device=DEV, generator=g).topk(2, dim=-1).indices.to(torch.int32)
    x = torch.randn(64, 256, device=DEV, generator=g).to(torch.bfloat16)
    w = (torch.randn(8, 256, 256, device=DEV, generator=g) / 16).to(torch.bfloat16)
    a, a_s, b, b_s, _, _ = quantize(x, w, 1)
    s, e, n = aotriton.moe_align_block_size(ids, 16, 8)  # block size 16: not the kernel's 128
    c = torch.empty(128, 256, dtype=torch.bfloat16, device=DEV)
    with pytest.raises(Exception, match="fused_moe_gemm_hopper"):
        aotriton.invoke_fused_moe_kernel(a, b, c, None, s, e, n, 2, 16, quant=1, A_scale=a_s, B_scale=b_s,
                                         force_config=name)
