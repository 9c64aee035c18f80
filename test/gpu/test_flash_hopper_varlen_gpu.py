"""The sm_90 Gluon forward for packed variable-length batches (tritonsrc/flash/fwd_hopper_varlen.py):
every sequence against its own float64 reference with NaN-poisoned outputs, both dtypes, head dim
64 (the one the rule builds), the three causal kinds, GQA, empty and one-row sequences, tails inside a tile; the
automatic route runs it and equals its forced run bitwise; every config the build has; and
non-finite values in a neighbouring sequence's rows (which a tile crossing a sequence's end reads)
leave the other sequences' results alone."""
import math

import pytest
import torch

from flash_reference import FWD_TOL, LSE_TOL, attention_ref, rel_err
from test_flash_hopper_gpu import built_configs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                                reason="needs an sm_90 GPU")

# (lens_q, lens_k, Hq, Hk): tails inside a 128-row tile, an empty sequence, one row, a sequence of
# several query blocks, more keys than queries and fewer (bottom-right causal rows that see no key), GQA.
CASES = [([5, 1, 300, 17, 64], [7, 33, 290, 17, 1], 4, 2), ([0, 129, 3], [200, 0, 129], 2, 2),
         ([384, 256], [130, 511], 6, 3)]


def packed(lens, H, D, dtype, g):
    return torch.randn(sum(lens), H, D, device="cuda", dtype=dtype, generator=g)


def cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")


def run(q, k, v, lens_q, lens_k, causal, force_config=None):
    """pyaotriton.attn_fwd_varlen into NaN-poisoned out / lse; (out, lse [Hq, total_q], config that ran)."""
    import pyaotriton
    from aotriton._glue import _DTYPES, view

    out = torch.full_like(q, float("nan"))
    lse = torch.full((q.shape[1], q.shape[0]), float("nan"), device="cuda", dtype=torch.float32)
    cu_q, cu_k = cu(lens_q), cu(lens_k)
    ran = pyaotriton.attn_fwd_varlen(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"),
                                     (lse.data_ptr(), lse.shape, lse.stride(), _DTYPES[torch.float32]),
                                     cu_q.data_ptr(), cu_k.data_ptr(), len(lens_q), max(lens_q), max(lens_k),
                                     1.0 / math.sqrt(q.shape[-1]), causal, 0.0, 0, 0, None,
                                     torch.cuda.current_stream().cuda_stream, force_config)
    torch.cuda.synchronize()
    return out, lse, ran


def matches_reference(q, k, v, lens_q, lens_k, causal, out, lse, skip=()):
    """Each sequence (but those in `skip`) against attention_ref of its own rows."""
    cq, ck = cu(lens_q).tolist(), cu(lens_k).tolist()
    for b in range(len(lens_q)):
        if b in skip or lens_q[b] == 0:
            continue
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        ref, ref_lse = attention_ref(q[None, qs], k[None, ks], v[None, ks], 1.0 / math.sqrt(q.shape[-1]), causal)
        assert rel_err(out[None, qs], ref) < FWD_TOL[q.dtype], b
        finite = torch.isfinite(ref_lse[0])
        got = lse[:, qs]
        assert torch.equal(torch.isfinite(got), finite), ("rows that see no key must have lse = -inf, only those", b)
        if finite.any():
            err = (got.double() - ref_lse[0])[finite].abs() / ref_lse[0][finite].abs().clamp_min(1)
            assert err.max() < LSE_TOL[q.dtype], b


_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def case_inputs(case, causal, D, dtype, salt=0):
    """(lens_q, lens_k, q, k, v) of CASES[case], fresh random data seeded by the parameters."""
    lens_q, lens_k, Hq, Hk = CASES[case]
    g = torch.Generator(device="cuda").manual_seed(100 * case + 10 * causal + D + salt)
    return (lens_q, lens_k, packed(lens_q, Hq, D, dtype, g), packed(lens_k, Hk, D, dtype, g),
            packed(lens_k, Hk, D, dtype, g))


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [64])
def test_varlen_runs_the_hopper_kernel(D, dtype, causal, case):
    lens_q, lens_k, q, k, v = case_inputs(case, causal, D, dtype)
    out, lse, ran = run(q, k, v, lens_q, lens_k, causal)
    assert "SCHEDULE=0" in ran, f"the automatic choice ran {ran!r}, not attn_fwd_hopper_varlen"
    matches_reference(q, k, v, lens_q, lens_k, causal, out, lse)
    forced, forced_lse, _ = run(q, k, v, lens_q, lens_k, causal, ran)
    assert torch.equal(out, forced) and torch.equal(lse, forced_lse)
    configs = built_configs(_NAMES[dtype], causal, D, kernel="attn_fwd_hopper_varlen")
    assert ran in configs
    for config in configs:
        out, lse, _ = run(q, k, v, lens_q, lens_k, causal, config)
        matches_reference(q, k, v, lens_q, lens_k, causal, out, lse)


def neighbours_stay_out(D, runner):
    """Sequence 1's K holds NaN and its V inf: tiles of sequences 0 and 2 that cross their end read
    those rows, and their results must not change (V's foreign rows are zeroed, K's scores masked).
    runner(q, k, v, lens_q, lens_k) -> (out, lse), non-causal."""
    lens_q, lens_k = [100, 50, 70], [100, 150, 30]
    g = torch.Generator(device="cuda").manual_seed(D)
    q, k, v = (packed(lens_q, 2, D, torch.float16, g), packed(lens_k, 2, D, torch.float16, g),
               packed(lens_k, 2, D, torch.float16, g))
    clean_out, clean_lse = runner(q, k, v, lens_q, lens_k)
    k[100:250] = float("nan")
    v[100:250] = float("inf")
    out, lse = runner(q, k, v, lens_q, lens_k)
    for rows in (slice(0, 100), slice(150, 220)):
        assert torch.isfinite(out[rows]).all() and torch.equal(out[rows], clean_out[rows])
        assert torch.equal(lse[:, rows], clean_lse[:, rows])
    matches_reference(q, k, v, lens_q, lens_k, 0, out, lse, skip=(1,))


@pytest.mark.parametrize("D", [64])
def test_neighbours_non_finite_rows_stay_out(D):
    ran = []

    def aot(q, k, v, lens_q, lens_k):
        out, lse, config = run(q, k, v, lens_q, lens_k, 0)
        ran.append(config)
        return out, lse

    neighbours_stay_out(D, aot)
    assert all("SCHEDULE=0" in config for config in ran)


def test_forcing_a_ping_pong_config_on_varlen_is_a_clear_error():
    """The varlen kernel has the serial schedule only: a ping-pong config name is refused with a message."""
    g = torch.Generator(device="cuda").manual_seed(3)
    q = packed([40, 60], 2, 128, torch.float16, g)
    k, v = packed([50, 70], 2, 128, torch.float16, g), packed([50, 70], 2, 128, torch.float16, g)
    with pytest.raises(Exception, match="attn_fwd_hopper_varlen"):
        run(q, k, v, [40, 60], [50, 70], 0, "BLOCK_M=128,BLOCK_N=128,NUM_STAGES=3,RESCALE_TH=0,SCHEDULE=3,maxnreg=0,"
                                            "num_warps=4")


@pytest.mark.parametrize("D", [64])
def test_jit_launcher_matches_the_aot_kernel(D):
    """python/jit/flash_fwd_hopper.attn_fwd_hopper_varlen_jit (experiments, a future tuner) builds the
    descriptors the operator builds: the same config gives the same bits."""
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_varlen_jit

    lens_q, lens_k, Hq, Hk = CASES[0]
    g = torch.Generator(device="cuda").manual_seed(D + 1)
    q, k, v = packed(lens_q, Hq, D, torch.bfloat16, g), packed(lens_k, Hk, D, torch.bfloat16, g), \
        packed(lens_k, Hk, D, torch.bfloat16, g)
    out, lse, ran = run(q, k, v, lens_q, lens_k, 2)
    jit_out = torch.full_like(q, float("nan"))
    jit_lse = torch.full_like(lse, float("nan"))
    config = dict(kv.split("=") for kv in ran.split(","))
    attn_fwd_hopper_varlen_jit(q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k), 1.0 / math.sqrt(D), 2,
                               {n: int(x) for n, x in config.items()}, out=jit_out, lse=jit_lse)
    torch.cuda.synchronize()
    assert torch.equal(out, jit_out) and torch.equal(lse, jit_lse)


# The ping-pong form (SCHEDULE 3; the loader warp zeroes V's foreign rows) through the JIT launcher: the
# rule does not build it yet (docs/notes-flash-perf.md, "The ping-pong for varlen head dim 128").
PING_PONG = {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 3, "num_warps": 4, "maxnreg": 0,
             "RESCALE_TH": 0}


def run_jit(q, k, v, lens_q, lens_k, causal, config):
    from python.jit.flash_fwd_hopper import attn_fwd_hopper_varlen_jit

    out = torch.full_like(q, float("nan"))
    lse = torch.full((q.shape[1], q.shape[0]), float("nan"), device="cuda", dtype=torch.float32)
    attn_fwd_hopper_varlen_jit(q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k),
                               1.0 / math.sqrt(q.shape[-1]), causal, config, out=out, lse=lse)
    torch.cuda.synchronize()
    return out, lse


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [128])
def test_ping_pong_through_the_jit(D, dtype, causal, case):
    lens_q, lens_k, q, k, v = case_inputs(case, causal, D, dtype, salt=1)
    out, lse = run_jit(q, k, v, lens_q, lens_k, causal, PING_PONG)
    matches_reference(q, k, v, lens_q, lens_k, causal, out, lse)


@pytest.mark.parametrize("D", [64, 128])
def test_ping_pong_keeps_neighbours_non_finite_rows_out(D):
    """neighbours_stay_out for the loader's zeroing."""
    neighbours_stay_out(D, lambda q, k, v, lens_q, lens_k: run_jit(q, k, v, lens_q, lens_k, 0, PING_PONG))
