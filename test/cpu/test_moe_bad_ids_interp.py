"""MoE kernels with bad index inputs or non-finite logits (interpreter).

Each case checks the documented result and that nothing outside the given
tensors is read or written: tensors are views into larger buffers whose guard
entries would change the result if read, or would lose their poison if
written.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import


import pytest
import torch
import triton

from python.jit import moe as mj  # noqa: E402
from tritonsrc.moe.topk_softmax import topk_softmax_kernel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

INF, NAN = float("inf"), float("nan")


# ------------------------------------------------------------ topk_softmax
def run_topk(logits, topk, renormalize, block_m=2):
    M, E = logits.shape
    w = torch.full((M, topk), NAN, dtype=torch.float32)
    ids = torch.full((M, topk), -7, dtype=torch.int32)
    topk_softmax_kernel[(triton.cdiv(M, block_m), 1, 1)](
        logits, w, ids, M, E, topk, logits.stride(0), logits.stride(1), w.stride(0), ids.stride(0),
        RENORMALIZE=renormalize, BLOCK_E=max(8, triton.next_power_of_2(E)), BLOCK_M=block_m)
    return w, ids


def ref_topk_nonfinite(logits, topk, renormalize):
    """The documented rule: NaN = -inf; +inf logits share the mass; no logit
    above -inf = uniform; ties by lower id."""
    x = logits.double().clone()
    x[torch.isnan(x)] = -INF
    rows = []
    for r in x:
        if (r == INF).any():
            p = (r == INF).double()
        elif (r == -INF).all():
            p = torch.ones_like(r)
        else:
            p = torch.exp(r - r.max())
        rows.append(p / p.sum())
    p = torch.stack(rows)
    ids = torch.sort(-p, dim=-1, stable=True).indices[:, :topk]
    w = torch.gather(p, 1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    return w, ids


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("renormalize", [False, True])
def test_topk_softmax_non_finite_logits(dtype, renormalize):
    E, topk = 6, 3
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(10, E, generator=gen)
    x[1, 2] = NAN                      # one NaN among finite logits
    x[2] = NAN                         # all NaN
    x[3, 4] = INF                      # one +inf
    x[4, 1] = INF
    x[4, 5] = INF                      # two +inf share the mass
    x[5, :3] = -INF                    # some -inf
    x[6] = -INF                        # all -inf
    x[7, 0], x[7, 3] = INF, NAN        # +inf and NaN
    x[8, :] = torch.tensor([NAN, -INF, NAN, -INF, NAN, -INF])
    x[9, 2], x[9, 3] = -INF, INF
    logits = x.to(dtype)
    w, ids = run_topk(logits, topk, renormalize)
    assert ((ids >= 0) & (ids < E)).all(), "every id written and in range"
    assert torch.isfinite(w).all(), "every weight written and finite"
    for r in range(ids.shape[0]):
        assert len(set(ids[r].tolist())) == topk, f"row {r}: ids repeat"
    rw, rids = ref_topk_nonfinite(logits, topk, renormalize)
    assert torch.equal(ids.long(), rids)
    torch.testing.assert_close(w.double(), rw, atol=2e-3 if dtype == torch.float16 else 1e-6, rtol=1e-3)


# ------------------------------------------------------------------- align
@pytest.mark.parametrize("path", ["small", "general"])
def test_align_ignores_ids_past_the_expert_map(path):
    gen = torch.Generator().manual_seed(8)
    E_global, E_local = 6, 3
    # The map is a view; the entries right after it map to local expert 0, so
    # a read past the map would put those slots into expert 0's blocks.
    storage = torch.zeros(E_global + 8, dtype=torch.int32)
    emap = storage[:E_global]
    emap.copy_(torch.tensor([2, -1, 0, -1, 1, -1], dtype=torch.int32))
    ids = torch.randint(0, E_global, (40, 2), generator=gen, dtype=torch.int32)
    ids[0, 0], ids[3, 1], ids[7, 0], ids[9, 1] = E_global, E_global + 5, -5, 2**31 - 1
    clean = ids.clone()
    clean[(ids < 0) | (ids >= E_global)] = -1  # documented: skipped like an unmapped id
    got = mj.moe_align_block_size(ids, 16, E_local, emap, path=path, block_t=16)
    want = mj.moe_align_block_size(clean, 16, E_local, emap, path=path, block_t=16)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    kept = set(got[0][got[0] < ids.numel()].tolist())
    assert not kept & {0, 7, 14, 19}, "slots with ids outside the map must be skipped"


# ------------------------------------------------------------ grouped GEMM
def test_grouped_gemm_masks_bad_expert_and_slot_ids():
    M, topk, E, N, K = 9, 2, 4, 32, 64
    gen = torch.Generator().manual_seed(21)
    ids = torch.stack([torch.randperm(E, generator=gen)[:topk] for _ in range(M)]).to(torch.int32)
    a = (torch.randn(M, K, generator=gen) / K ** 0.5).half()
    # Two guard experts on each side of b, all ones: reading one gives a
    # non-zero row where the documented result is exactly zero.
    storage = torch.ones(E + 4, N, K, dtype=torch.float16)
    b = storage[2:2 + E]
    b.copy_(torch.randn(E, N, K, generator=gen).half())
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=32, GROUP_SIZE_M=1)
    s, e, n = mj.moe_align_block_size(ids, 16, E)
    nblocks = int(n[0]) // 16
    assert nblocks >= 3
    e2 = e.clone()
    e2[0], e2[1], e2[2] = E, -2, 2**31 - 1          # past the end, before the start, huge
    s2 = s.clone()
    victim = int(s2[16 * 3]) if nblocks > 3 else None
    if victim is not None:
        s2[16 * 3] = -1                                # a negative slot id: not read, not written
    c_full = torch.full((M * topk + 2, N), float("nan"), dtype=torch.float16)
    c = c_full[1:1 + M * topk]
    mj.invoke_grouped_gemm(a, b, c, None, s2, e2, n, topk, cfg)
    assert torch.isnan(c_full[0]).all() and torch.isnan(c_full[-1]).all(), "guard row of c written"
    slots = s2[:16 * nblocks].reshape(nblocks, 16)
    for blk in range(nblocks):
        rows = slots[blk][(slots[blk] >= 0) & (slots[blk] < M * topk)].long()
        if blk < 3:
            assert (c[rows] == 0).all(), f"block {blk} has a bad expert id: rows must be zero"
            continue
        ex = int(e2[blk])
        want = a.double()[rows // topk] @ b[ex].double().T
        torch.testing.assert_close(c[rows].double(), want, atol=2e-2, rtol=2e-2)
    if victim is not None:
        assert torch.isnan(c[victim]).all(), "the slot replaced by -1 is not written by anyone"
