"""The Gluon Hopper flash forward experiment (bench/experiments/flash_fwd_gluon*.py)
on the GPU: fresh random inputs with sequence tails, GQA and rows that see no
key, outputs poisoned with NaN; error vs float32 at most 2x that of the same
math in bf16 (flash-attn's criterion), for O and LSE. sm_90 only (wgmma, TMA).
The full check and the benchmark: bench/experiments/run_gluon_experiment.sh."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
    reason="the Gluon experiment needs an sm_90 (Hopper) GPU")


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("variant", ["nextqk_n128_s3", "serial_n64_s2"])
def test_gluon_forward_matches_float32(head_dim, variant):
    from bench.experiments.flash_fwd_gluon import check_one
    g = torch.Generator(device="cuda").manual_seed(head_dim)
    # seqlen_q > seqlen_k, bottom-right causal: the first rows see no key.
    b, sq, sk, hq, hk = 2, 457, 300, 4, 2
    q = torch.randn(b, sq, hq, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(b, sk, hk, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(b, sk, hk, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    o = torch.full_like(q, float("nan"))
    lse = torch.full((b, hq, sq), float("nan"), device="cuda")
    ok, msg = check_one(q, k, v, 2, variant, out=o, lse_out=lse)
    assert ok, msg
