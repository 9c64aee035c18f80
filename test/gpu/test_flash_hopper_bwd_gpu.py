"""The sm_90 flash backward (tritonsrc/flash/bwd_hopper.py as bwd_dkdv_hopper):
both dQ paths (fp32 atomics into the caller's dq_accum workspace, or the
deterministic Triton dQ kernel) against float64 autograd with NaN-poisoned
outputs, the routing (eligible calls run it, the rest the Triton kernels),
the workspace checks and the Python layer's deterministic switch."""
import math

import pytest
import torch

from flash_reference import GRAD_TOL, attention_ref, rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")

# rules_flash_hopper's BWD_CONFIG (warp-specialized), BWD_SERIAL and BWD_ONE_WARPGROUP (head dim 64),
# any of which the tuning database may pick.
HOPPER_BWD = "BLOCK_M=64,BLOCK_N=128,NUM_STAGES=2,SCHEDULE=1,num_warps=8"
HOPPER_BWD_SERIAL = "BLOCK_M=64,BLOCK_N=128,NUM_STAGES=2,SCHEDULE=0,num_warps=8"
HOPPER_BWD_1WG = "BLOCK_M=64,BLOCK_N=64,NUM_STAGES=2,SCHEDULE=0,num_warps=4"


def _view(t, name):
    from aotriton._glue import view
    return view(t, name)


def forward(q, k, v, causal):
    """(out, lse) of the forward (whichever kernel serves it)."""
    import pyaotriton

    B, Sq, Hq, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, Sq, device=q.device, dtype=torch.float32)
    pyaotriton.attn_fwd(_view(q, "q"), _view(k, "k"), _view(v, "v"), _view(out, "out"), _view(lse, "lse"),
                        1.0 / math.sqrt(D), causal, 0.0, 0, 0, None, torch.cuda.current_stream().cuda_stream)
    return out, lse


def backward(q, k, v, out, lse, dout, causal, dq_accum=None, force_config=None):
    """pyaotriton.attn_bwd into NaN-poisoned dq/dk/dv/delta; returns (dq, dk, dv, the config it reports)."""
    import pyaotriton

    dq, dk, dv = (torch.full_like(t, float("nan")) for t in (q, k, v))
    delta = torch.full_like(lse, float("nan"))
    ran = pyaotriton.attn_bwd(*(_view(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (out, "out"),
                                                          (dout, "dout"), (lse, "lse"), (dq, "dq"), (dk, "dk"),
                                                          (dv, "dv"), (delta, "delta"))),
                              1.0 / math.sqrt(q.shape[-1]), causal, 0.0, 0, 0,
                              torch.cuda.current_stream().cuda_stream, force_config,
                              dq_accum=None if dq_accum is None else _view(dq_accum, "dq_accum"))
    return dq, dk, dv, ran


def ref_grads(q, k, v, dout, causal):
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out, _ = attention_ref(qd, kd, vd, 1.0 / math.sqrt(q.shape[-1]), causal)
    out.backward(dout.double())
    return qd.grad, kd.grad, vd.grad


def check(got, want, dtype):
    for name, g, r in zip(("dq", "dk", "dv"), got, want):
        if r.abs().max() == 0:  # e.g. rows that see no key: exactly 0
            assert torch.isfinite(g).all() and g.abs().max() < 1e-3, name
        else:
            assert rel_err(g, r) < GRAD_TOL[dtype], name


def inputs(B, Sq, Sk, Hq, Hk, D, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda S, H: torch.randn(B, S, H, D, device="cuda", dtype=dtype, generator=g)  # noqa: E731
    q, k, v = mk(Sq, Hq), mk(Sk, Hk), mk(Sk, Hk)
    return q, k, v, mk(Sq, Hq)


# Sequence tails on both sides, rows that see no key (bottom-right, Sq > Sk),
# one key block, many query blocks, GQA, a single query row.
SHAPES = [(2, 333, 333, 4, 4), (1, 1000, 130, 4, 2), (2, 130, 1000, 6, 2), (1, 1, 77, 2, 1), (1, 257, 1, 2, 2),
          (1, 2048, 2048, 2, 1)]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic_dq", "split_dq"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, causal, head_dim, dtype, atomic):
    B, Sq, Sk, Hq, Hk = shape
    q, k, v, dout = inputs(B, Sq, Sk, Hq, Hk, head_dim, dtype, seed=Sq * 7 + Sk + causal)
    out, lse = forward(q, k, v, causal)
    dqa = torch.full(q.shape, float("nan"), device="cuda", dtype=torch.float32) if atomic else None
    dq, dk, dv, ran = backward(q, k, v, out, lse, dout, causal, dqa)
    assert ran in (HOPPER_BWD, HOPPER_BWD_SERIAL, HOPPER_BWD_1WG), f"the sm_90 backward should have run, {ran!r} did"
    check((dq, dk, dv), ref_grads(q, k, v, dout, causal), dtype)
    if atomic:  # the workspace holds the unscaled fp32 dQ the conversion read: dq = fp32(scale) * it, rounded
        scale = torch.tensor(1.0 / math.sqrt(head_dim), dtype=torch.float32, device="cuda")
        assert torch.equal((dqa * scale).to(dtype), dq)


def _rule_candidates():
    """(head dim, config) for every config the tuner may pick (the rule's tuning space;
    the AOT build compiles only the chosen ones), as the JIT runs them."""
    from python.rules_flash_hopper import bwd_dkdv_hopper as rule
    f = {"dtype": "bf16", "CAUSAL_TYPE": 0, "FUSE_DQ": True}
    return [(d, c) for d in (64, 128) for c in rule.tuning.all_configs(dict(f, BLOCK_DMODEL=d), 90)]


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic_dq", "split_dq"])
@pytest.mark.parametrize("causal", [0, 2])
@pytest.mark.parametrize("head_dim,config", _rule_candidates(),
                         ids=lambda x: str(x) if isinstance(x, int) else f"s{x['SCHEDULE']}_w{x['num_warps']}")
def test_every_tuning_candidate_matches_reference_through_the_jit(head_dim, config, causal, atomic):
    """The schedules the tuning database may choose, whether or not this build compiled them."""
    from python.jit.flash_bwd_hopper import attn_bwd_hopper_jit

    dtype = torch.bfloat16 if causal else torch.float16
    q, k, v, dout = inputs(2, 333, 517, 4, 2, head_dim, dtype, seed=head_dim + causal)
    out, lse = forward(q, k, v, causal)
    poisoned = tuple(torch.full_like(t, float("nan")) for t in (q, k, v))
    got = attn_bwd_hopper_jit(dout, q, k, v, out, lse, 1.0 / math.sqrt(head_dim), causal,
                              dict(config, FUSE_DQ=atomic), out=poisoned)
    check(got, ref_grads(q, k, v, dout, causal), dtype)


def test_split_path_is_bitwise_repeatable_and_dk_dv_do_not_depend_on_the_dq_path():
    q, k, v, dout = inputs(2, 1500, 1500, 8, 2, 128, torch.bfloat16, seed=3)
    out, lse = forward(q, k, v, 2)
    runs = [backward(q, k, v, out, lse, dout, 2) for _ in range(3)]
    for r in runs[1:]:
        for a, b in zip(runs[0][:3], r[:3]):
            assert torch.equal(a, b)
    dqa = torch.empty(q.shape, device="cuda", dtype=torch.float32)
    atomic = backward(q, k, v, out, lse, dout, 2, dqa)
    assert torch.equal(atomic[1], runs[0][1]) and torch.equal(atomic[2], runs[0][2]), "dK/dV are computed alike"
    assert rel_err(atomic[0], runs[0][0].double()) < 1e-2


def test_forced_config_picks_the_kernel_that_owns_the_name():
    """A bwd_dkdv_hopper config name runs that kernel (refused on a call it cannot serve); any other
    name goes to the Triton dK/dV kernel (whose error names it when it has no such config)."""
    q, k, v, dout = inputs(1, 300, 300, 2, 2, 64, torch.float16, seed=4)
    out, lse = forward(q, k, v, 0)
    dq, dk, dv, ran = backward(q, k, v, out, lse, dout, 0, force_config=HOPPER_BWD)
    assert ran == HOPPER_BWD
    check((dq, dk, dv), ref_grads(q, k, v, dout, 0), torch.float16)
    with pytest.raises(Exception, match="kernel bwd_dkdv functional"):
        backward(q, k, v, out, lse, dout, 0, force_config="BLOCK_M=1,no_such_config=1")
    q96, k96, v96, dout96 = inputs(1, 100, 100, 2, 2, 96, torch.float16, seed=4)
    out96, lse96 = forward(q96, k96, v96, 0)
    with pytest.raises(Exception, match="bwd_dkdv_hopper config"):
        backward(q96, k96, v96, out96, lse96, dout96, 0, force_config=HOPPER_BWD)


@pytest.mark.parametrize("case", ["head_dim_96", "head_dim_256", "fp32"])
def test_calls_it_cannot_serve_take_the_triton_kernels(case):
    """Other head dims and fp32 run the Triton kernels (the workspace is ignored), with the same results."""
    dtype = torch.float32 if case == "fp32" else torch.float16
    D = {"head_dim_96": 96, "head_dim_256": 256, "fp32": 64}[case]
    q, k, v, dout = inputs(1, 200, 200, 2, 2, D, dtype, seed=5)
    out, lse = forward(q, k, v, 1)
    dqa = torch.empty(q.shape, device="cuda", dtype=torch.float32)
    dq, dk, dv, ran = backward(q, k, v, out, lse, dout, 1, dqa)
    assert ran not in (HOPPER_BWD, HOPPER_BWD_1WG)
    check((dq, dk, dv), ref_grads(q, k, v, dout, 1), dtype)


@pytest.mark.parametrize("bad,match", [("dtype", "float32"), ("shape", "dq_accum"), ("strides", "16 elements"),
                                       ("overlap", "overlap")])
def test_bad_workspace_is_refused(bad, match):
    q, k, v, dout = inputs(1, 64, 64, 2, 2, 64, torch.float16, seed=6)
    out, lse = forward(q, k, v, 0)
    dqa = {"dtype": lambda: torch.empty(q.shape, device="cuda", dtype=torch.float16),
           "shape": lambda: torch.empty(1, 63, 2, 64, device="cuda", dtype=torch.float32),
           "strides": lambda: torch.empty(1, 64, 2, 72, device="cuda", dtype=torch.float32)[..., :64],
           "overlap": lambda: torch.empty(0)}[bad]()
    if bad == "overlap":  # the workspace shares q's bytes (q: the first half of each 128-wide fp16 row)
        big = torch.randn(1, 64, 2, 128, device="cuda", dtype=torch.float16)
        q = big[..., :64]
        dqa = big.view(torch.float32)  # [1, 64, 2, 64] fp32 over the same bytes
    with pytest.raises(Exception, match=match):
        backward(q, k, v, out, lse, dout, 0, dqa)


def test_python_layer_deterministic_switch():
    """aotriton.flash_attn_backward: deterministic=True is bitwise repeatable;
    the default (atomic dQ on sm_90) gives the same dK/dV and a dQ as close to
    the reference."""
    import aotriton

    q, k, v, dout = inputs(2, 1000, 1000, 8, 2, 128, torch.bfloat16, seed=7)
    out, lse, _ = aotriton.flash_attn_func(q, k, v, causal=True, return_lse=True)
    det = [aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=True, deterministic=True) for _ in range(2)]
    for a, b in zip(*det):
        assert torch.equal(a, b)
    fast = aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=True)
    assert torch.equal(fast[1], det[0][1]) and torch.equal(fast[2], det[0][2])
    ref = ref_grads(q, k, v, dout, 2)
    assert rel_err(fast[0], ref[0]) < GRAD_TOL[torch.bfloat16]
    torch.use_deterministic_algorithms(True)
    try:
        again = aotriton.flash_attn_backward(dout, q, k, v, out, lse, causal=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(again[0], det[0][0]), "use_deterministic_algorithms(True) selects the deterministic path"
