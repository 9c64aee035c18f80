"""Sliding window, softcap and ALiBi in the flash forward and backward kernels,
under the Triton interpreter, against float64 torch autograd (feature_ref.py)."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from feature_ref import attention, scores, visible  # noqa: E402
from flash_inputs import flash_inputs  # noqa: E402
from python.jit.flash_bwd import attn_bwd_jit  # noqa: E402
from python.jit.flash_features import feature_args  # noqa: E402
from python.jit.flash_fwd import attn_fwd_jit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
OUT_TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.float32: dict(atol=2e-5, rtol=2e-5)}
GRAD_TOL = {torch.float16: 1e-2, torch.float32: 1e-5}  # relative (norm) error of dq, dk, dv
ZERO_TOL = {torch.float16: 1e-3, torch.float32: 1e-6}  # |gradient| where the exact one is 0


def rel_err(got, ref):
    assert torch.isfinite(got).all(), "non-finite (unwritten NaN-poisoned?) gradient"
    return ((got.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def run_case(lens_q, lens_k, hq=2, hk=1, d=32, dtype=torch.float16, causal=0, window=(-1, -1), softcap=0.0,
             alibi=None, scale=None, varlen=False, seed=0, backward=True, poison=None):
    """Kernel forward (+ backward) on random data vs the float64 reference, per sequence.
    alibi: None, "h" (Hq,) or "bh" (B, Hq) random slopes. poison(q, k, v, do) may write
    NaN into elements the band must never read (the tile-skipping tests)."""
    torch.manual_seed(seed)
    B = len(lens_q)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    slopes = None
    if alibi == "h":
        slopes = torch.rand(hq) * 0.5
    elif alibi == "bh":
        slopes = torch.rand(B, hq) * 0.5
    q, k, v, do, extra, lse_shape, (qs, ks, vs, dos) = flash_inputs(lens_q, lens_k, hq, hk, d, d, dtype, varlen)
    if poison is not None:
        poison(q, k, v, do)
    feats = dict(window=window, softcap=softcap, alibi_slopes=slopes)
    o = torch.full_like(q, float("nan"))
    lse = torch.full(lse_shape, float("nan"))
    o, lse = attn_fwd_jit(q, k, v, sm_scale=scale, causal_type=causal, config=SMALL, out=o, lse_out=lse,
                          **extra, **feats)
    if backward:
        out = tuple(torch.full_like(t, float("nan")) for t in (q, k, v))
        dq, dk, dv = attn_bwd_jit(do, q, k, v, o, lse, sm_scale=scale, causal_type=causal, out=out, **extra,
                                  **feats)
    row_q = row_k = 0
    for b in range(B):
        sq, sk = lens_q[b], lens_k[b]
        if varlen:
            pick_q = (slice(row_q, row_q + sq),)
            pick_k = (slice(row_k, row_k + sk),)
            lse_b = lse[:, row_q:row_q + sq]
        else:
            pick_q = pick_k = (b,)
            lse_b = lse[b]
        row_q, row_k = row_q + sq, row_k + sk
        # (H, S, D) float64 leaves, kv heads expanded for GQA.
        qd = qs[b].transpose(0, 1).double().requires_grad_()
        kd = ks[b].transpose(0, 1).double().requires_grad_()
        vd = vs[b].transpose(0, 1).double().requires_grad_()
        sl = None if slopes is None else (slopes if slopes.dim() == 1 else slopes[b]).double()
        ro, rl = attention(qd, kd.repeat_interleave(hq // hk, 0), vd.repeat_interleave(hq // hk, 0), scale, causal,
                           window, softcap, sl)
        torch.testing.assert_close(o[pick_q].transpose(0, 1).double(), ro.detach(), **OUT_TOL[dtype])
        torch.testing.assert_close(lse_b.double(), rl.detach(), atol=1e-4, rtol=1e-4)
        if backward:
            ro.backward(dos[b].transpose(0, 1).double())
            for name, got, leaf in (("dq", dq[pick_q], qd), ("dk", dk[pick_k], kd), ("dv", dv[pick_k], vd)):
                ref = leaf.grad
                if ref.numel() == 0:
                    continue
                if ref.abs().max() == 0:  # no row sees a key, or one key per row (dq = 0 up to rounding)
                    assert got.abs().max() < ZERO_TOL[dtype], name
                else:
                    assert rel_err(got.transpose(0, 1), ref) < GRAD_TOL[dtype], name
    return q, k, scale, slopes


# --- sliding window --------------------------------------------------------------------------
WINDOWS = [(0, 0), (3, 5), (7, -1), (-1, 4), (100, 100), (0, -1), (20, 0)]
SEQS = [(40, 40), (24, 57), (57, 24)]
# Each window on two of the three seqlen pairs (rotating), to keep the interpreter time down.
WINDOW_GRID = [(w, SEQS[(n + i) % 3]) for n, w in enumerate(WINDOWS) for i in (0, 1)]


@pytest.mark.parametrize("window,seqs", WINDOW_GRID)
def test_window(window, seqs):
    run_case([seqs[0]], [seqs[1]], window=window)


CAUSAL_GRID = [(c, w, SEQS[n % 3]) for n, (c, w) in enumerate(
    (c, w) for c in (1, 2) for w in [(0, -1), (5, -1), (18, 3), (100, -1)])]


@pytest.mark.parametrize("causal,window,seqs", CAUSAL_GRID)
def test_window_causal(causal, window, seqs):
    """window_right is ignored with causal (flash-attn); the band follows the causal alignment."""
    run_case([seqs[0]], [seqs[1]], causal=causal, window=window)


def test_window_larger_than_sequence_equals_full():
    q1, k1, *_ = run_case([30], [45], window=(1000, 1000), backward=False)
    # and the same data with no window at all: identical outputs (the band covers everything)
    o_win, l_win = attn_fwd_jit(q1, k1, k1, sm_scale=0.2, config=SMALL, window=(1000, 1000))
    o_all, l_all = attn_fwd_jit(q1, k1, k1, sm_scale=0.2, config=SMALL)
    torch.testing.assert_close(o_win, o_all, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(l_win, l_all, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [0, 1, 2])
def test_window_varlen_gqa(causal):
    run_case([23, 1, 40, 0, 17], [31, 9, 40, 5, 3], hq=4, hk=2, causal=causal, window=(6, 2), varlen=True)


def test_window_fp32():
    run_case([37], [50], dtype=torch.float32, causal=2, window=(9, -1))


def test_window_padded_head():
    run_case([33], [33], d=40, window=(4, 4))


# --- tiles outside the band are never read ---------------------------------------------------
def test_window_skips_key_tiles():
    """16 queries, 128 keys, bottom-right window 8: keys < 96 lie in tiles no row
    sees. NaN there would reach O and dQ through 0 * NaN if such a tile were
    visited (masking is not enough); their dK/dV must come out 0."""
    def poison(q, k, v, do):
        k[:, :96] = float("nan")
        v[:, :96] = float("nan")
    run_case([16], [128], hq=1, hk=1, causal=2, window=(8, -1), poison=poison)


def test_window_skips_row_tiles():
    """128 queries, 16 keys, bottom-right causal window 8: rows < 112 see no key
    (O 0, LSE -inf, dQ 0) and dK/dV must never load the Q/dO row blocks before
    96 (NaN there)."""
    def poison(q, k, v, do):
        q[:, :96] = float("nan")
        do[:, :96] = float("nan")
    run_case([128], [16], hq=1, hk=1, causal=2, window=(8, -1), poison=poison)


# --- softcap ---------------------------------------------------------------------------------
@pytest.mark.parametrize("softcap", [30.0, 50.0])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_softcap(softcap, causal):
    d = 32
    scale = 40.0 / math.sqrt(d)  # scaled scores ~ N(0, 40^2): many beyond the cap
    q, k, *_ = run_case([29], [45], hq=2, hk=2, d=d, causal=causal, softcap=softcap, scale=scale)
    raw = scores(q[0].transpose(0, 1).double(), k[0].transpose(0, 1).double(), scale)
    assert (raw.abs() > softcap).float().mean() > 0.05, "the test must exercise the saturated region"


def test_softcap_window_varlen_gqa_fp32():
    run_case([19, 33], [40, 12], hq=4, hk=1, dtype=torch.float32, causal=1, window=(10, -1), softcap=30.0,
             scale=1.5, varlen=True)


# --- ALiBi -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["h", "bh"])
@pytest.mark.parametrize("causal", [0, 1, 2])
def test_alibi(shape, causal):
    run_case([21, 21], [38, 38], hq=3, hk=1, causal=causal, alibi=shape, seed=3)


def test_alibi_varlen_window():
    run_case([25, 7, 30], [30, 18, 11], hq=2, hk=2, causal=2, window=(12, -1), alibi="bh", varlen=True)


def test_alibi_fp32_sq_gt_sk():
    run_case([50], [20], dtype=torch.float32, alibi="h")


# --- argument mapping ------------------------------------------------------------------------
def test_feature_args_rejects_bad_values():
    with pytest.raises(ValueError, match="window_size"):
        feature_args(0, (-2, 3))
    with pytest.raises(ValueError, match="softcap"):
        feature_args(0, None, -1.0)
    with pytest.raises(ValueError, match="combined"):
        feature_args(0, None, 30.0, torch.ones(2))


def test_feature_args_off_is_the_plain_kernel():
    assert feature_args(2)["LOCAL_WINDOW"] is False
    assert feature_args(1, (-1, -1))["CAUSAL_TYPE"] == 1
    f = feature_args(1, (5, 7))
    assert (f["CAUSAL_TYPE"], f["window_right"], f["window_align"]) == (0, 0, 0)


def test_reference_window_semantics():
    """The reference's band against flash-attn's documented example (sq=sk, window (1, 1))."""
    v = visible(4, 4, 0, (1, 1)).int().tolist()
    assert v == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    v = visible(2, 4, 2, (1, -1)).int().tolist()  # bottom-right causal, left 1
    assert v == [[0, 1, 1, 0], [0, 0, 1, 1]]
