"""The per-warp-keys decode experiment (bench/experiments/decode_warp_split.py)
under the interpreter: partial outputs combined by logsumexp match SDPA in
float32 on fresh random fp16 data (GQA, keys not a multiple of the tile, empty
splits), outputs poisoned first; and a wrong key count fails the comparison."""
import pytest

torch = pytest.importorskip("torch")

from bench.experiments.decode_warp_split import combine, launch  # noqa: E402


def _run(B, S, Hq, Hk, D, splits, warps, seqlen_k=None):
    g = torch.Generator().manual_seed(B * 1000 + S + splits)
    q = torch.randn(B, Hq, D, generator=g).half()
    kc = torch.randn(B, S, Hk, D, generator=g).half()
    vc = torch.randn(B, S, Hk, D, generator=g).half()
    o_part = torch.full((splits, B * Hq, D), float("nan"))
    lse_part = torch.full((splits, B * Hq), float("nan"))
    launch(q, kc if seqlen_k is None else kc[:, :seqlen_k], vc if seqlen_k is None else vc[:, :seqlen_k],
           o_part, lse_part, splits, warps, 16)
    rep = Hq // Hk
    ref = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None].double(), kc.transpose(1, 2).double().repeat_interleave(rep, 1),
        vc.transpose(1, 2).double().repeat_interleave(rep, 1)).reshape(B * Hq, D)
    return combine(o_part, lse_part).double(), ref


@pytest.mark.parametrize("B,S,Hq,Hk,D,splits,warps", [(2, 100, 8, 2, 64, 3, 4), (1, 300, 16, 1, 32, 2, 2),
                                                      (1, 37, 4, 4, 32, 4, 4)], ids=str)
def test_matches_sdpa(B, S, Hq, Hk, D, splits, warps):
    out, ref = _run(B, S, Hq, Hk, D, splits, warps)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 2e-3 * ref.abs().max()


def test_missing_keys_fail():
    out, ref = _run(1, 100, 8, 2, 64, 2, 4, seqlen_k=90)  # the kernel sees 90 of the 100 keys
    assert (out - ref).abs().max() > 2e-2 * ref.abs().max()
