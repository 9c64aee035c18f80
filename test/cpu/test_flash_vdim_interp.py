"""V head dim different from the Q/K head dim (BLOCK_DV, issue 12) in the flash
forward and backward kernels, under the Triton interpreter, against float64
torch autograd: the pairs models use (Q/K 192 with V 128 as DeepSeek MLA, Q/K
128 with V 64), causal both ways, GQA, varlen."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from feature_ref import attention  # noqa: E402
from flash_inputs import flash_inputs  # noqa: E402
from python.jit.flash_bwd import attn_bwd_jit  # noqa: E402
from python.jit.flash_fwd import attn_fwd_jit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
OUT_TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.float32: dict(atol=2e-5, rtol=2e-5)}
GRAD_TOL = {torch.float16: 1e-2, torch.float32: 1e-5}  # relative (norm) error of dq, dk, dv
PAIRS = [(192, 128), (128, 64)]  # (Q/K head dim, V head dim)
GUARD = 8  # extra NaN columns after O and dV: the kernels must not write them


def rel_err(got, ref):
    assert torch.isfinite(got).all(), "non-finite (unwritten NaN-poisoned?) output"
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def guarded(shape, dtype):
    """A NaN tensor of `shape` whose rows are GUARD columns wider (a strided view)."""
    full = torch.full(shape[:-1] + (shape[-1] + GUARD,), float("nan"), dtype=dtype)
    return full[..., :shape[-1]], full[..., shape[-1]:]


def run_case(lens_q, lens_k, d, dv, hq=2, hk=1, dtype=torch.float16, causal=0, varlen=False, seed=0):
    torch.manual_seed(seed)
    B = len(lens_q)
    scale = 1.0 / math.sqrt(d)
    q, k, v, do, extra, lse_shape, (qs, ks, vs, dos) = flash_inputs(lens_q, lens_k, hq, hk, d, dv, dtype, varlen)
    o, o_guard = guarded(q.shape[:-1] + (dv,), dtype)
    lse = torch.full(lse_shape, float("nan"))
    o, lse = attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=causal, config=SMALL, out=o, lse_out=lse, **extra)
    assert o.shape[-1] == dv and torch.isnan(o_guard).all(), "the forward wrote past V's head dim"
    dv_out, dv_guard = guarded(v.shape, dtype)
    out = (torch.full_like(q, float("nan")), torch.full_like(k, float("nan")), dv_out)
    dq, dk, dvg = attn_bwd_jit(do, q, k, v, o, lse, sm_scale=scale, causal_type=causal, out=out, **extra)
    assert torch.isnan(dv_guard).all(), "dV was written past V's head dim"
    row_q = row_k = 0
    for b in range(B):
        sq, sk = lens_q[b], lens_k[b]
        if varlen:
            pick_q, pick_k = (slice(row_q, row_q + sq),), (slice(row_k, row_k + sk),)
            lse_b = lse[:, row_q:row_q + sq]
        else:
            pick_q = pick_k = (b,)
            lse_b = lse[b]
        row_q, row_k = row_q + sq, row_k + sk
        qd, kd, vd = (t[b].transpose(0, 1).double().requires_grad_() for t in (qs, ks, vs))
        ro, rl = attention(qd, kd.repeat_interleave(hq // hk, 0), vd.repeat_interleave(hq // hk, 0), scale, causal)
        torch.testing.assert_close(o[pick_q].transpose(0, 1).double(), ro.detach(), **OUT_TOL[dtype])
        torch.testing.assert_close(lse_b.double(), rl.detach(), atol=1e-4, rtol=1e-4)
        ro.backward(dos[b].transpose(0, 1).double())
        for name, got, leaf in (("dq", dq[pick_q], qd), ("dk", dk[pick_k], kd), ("dv", dvg[pick_k], vd)):
            assert got.shape[-1] == leaf.shape[-1], name
            assert rel_err(got.transpose(0, 1), leaf.grad) < GRAD_TOL[dtype], name


@pytest.mark.parametrize("d,dv", PAIRS)
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_batched(d, dv, causal):
    run_case([37, 37], [50, 50], d, dv, causal=causal)


@pytest.mark.parametrize("d,dv", PAIRS)
@pytest.mark.parametrize("causal", [0, 2])
def test_varlen_gqa(d, dv, causal):
    # Empty and one-row sequences, seqlen_q > seqlen_k (bottom-right rows that see nothing).
    run_case([23, 1, 33, 0], [31, 9, 17, 5], d, dv, hq=4, hk=2, causal=causal, varlen=True)


@pytest.mark.parametrize("d,dv", PAIRS)
def test_fp32_causal_top_left(d, dv):
    run_case([29], [29], d, dv, hq=3, hk=3, dtype=torch.float32, causal=1, seed=1)


def test_vdim_differs_from_shared_head_dim_result():
    """The same Q/K with V cut to its first 64 columns: O is the first 64
    columns of the shared-head-dim O (the V head dim changes nothing else)."""
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 40, 2, 128, dtype=torch.float16) for _ in range(3))
    full, lse_full = attn_fwd_jit(q, k, v, sm_scale=0.1, causal_type=2, config=SMALL)
    half, lse_half = attn_fwd_jit(q, k, v[..., :64].contiguous(), sm_scale=0.1, causal_type=2, config=SMALL)
    assert half.shape == (1, 40, 2, 64)
    torch.testing.assert_close(half, full[..., :64], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(lse_half, lse_full, atol=1e-5, rtol=1e-5)
