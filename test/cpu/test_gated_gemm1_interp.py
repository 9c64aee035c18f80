"""The gated-GEMM1 experiment (bench/experiments/gated_gemm1.py) under the interpreter: its
kernel equals GEMM1 + act_and_mul on tiny shapes (K, N not multiples of the tiles, padded
blocks), and its check fails when the two differ (another activation)."""
import pytest

torch = pytest.importorskip("torch")

from bench.experiments import gated_gemm1 as G  # noqa: E402


def test_gated_kernel_matches_the_two_kernels():
    assert G.main(["--smoke"]) == 0


def test_a_different_activation_is_caught():
    from python.jit import moe as mj
    spec, M = G.SMOKE, 6
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=16, BLOCK_SIZE_K=32, GROUP_SIZE_M=2)
    gen = torch.Generator().manual_seed(1)
    E, topk, K, N = spec["E"], spec["topk"], spec["K"], spec["N"]
    x = torch.randn(M, K, generator=gen)
    w1 = torch.randn(E, 2 * N, K, generator=gen) / K ** 0.5
    ids = torch.rand(M, E, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
    sid, eid, ntpp = mj.moe_align_block_size(ids, 16, E)
    ref = torch.empty(M * topk, N)
    out = torch.empty(M * topk, N)
    G.two_kernel(mj, x, w1, torch.empty(M * topk, 2 * N), ref, sid, eid, ntpp, topk, cfg, 1)  # gelu
    G.gated(x, w1, out, sid, eid, ntpp, topk, cfg, 0)  # silu
    assert (out - ref).abs().max() / ref.abs().max() > 1e-3
