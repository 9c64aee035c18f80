"""Expert-parallel dispatch/combine indices under TRITON_INTERPRET=1 against a
plain torch reference, with random expert maps (and a dispatch/combine round
trip of real rows through the indices)."""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch

from moe_ep_reference import ep_dispatch_ref, random_expert_map  # noqa: E402
from python.jit import moe_routing as rj  # noqa: E402


def _poisoned(M, topk, L):
    return (torch.full((M * topk,), -7, dtype=torch.int32), torch.full((M, topk), -7, dtype=torch.int32),
            torch.full((L + 1,), -7, dtype=torch.int32))


@pytest.mark.parametrize("M,topk,E,L,path", [
    (1, 1, 8, 3, "auto"), (7, 2, 8, 4, "auto"), (33, 6, 64, 16, "auto"), (5, 8, 256, 64, "auto"),
    (222, 6, 64, 9, "general"), (300, 8, 256, 100, "auto"), (40, 2, 16, 16, "general"),
])
def test_ep_dispatch_random_maps(M, topk, E, L, path):
    gen = torch.Generator().manual_seed(M * 31 + E + L)
    expert_map = random_expert_map(E, L, gen)
    ids = torch.stack([torch.randperm(E, generator=gen)[:topk] for _ in range(M)]).to(torch.int32)
    ids[0, 0] = E + 3 if M > 1 else ids[0, 0]  # an out-of-range global id is dropped, never read past the map
    outs = _poisoned(M, topk, L)
    rj.ep_dispatch(ids, expert_map, L, block_t=64, align_path=path, outs=outs)
    ref = ep_dispatch_ref(ids, expert_map, L)
    for got, want, name in zip(outs, ref, ("sorted_token_ids", "inverse", "expert_offsets")):
        assert torch.equal(got.long(), want), name
    # Round trip: dispatch rows, run a per-expert op, combine with the weights.
    x = torch.randn(M, 4, dtype=torch.float64, generator=gen)
    w = torch.rand(M, topk, dtype=torch.float64, generator=gen)
    sorted_tokens, inverse, offsets = outs
    total = int(offsets[-1])
    y = x[sorted_tokens[:total].long()]
    for e in range(L):
        y[offsets[e]:offsets[e + 1]] *= (e + 2)
    out = torch.zeros(M, 4, dtype=torch.float64)
    for m in range(M):
        for k in range(topk):
            if inverse[m, k] >= 0:
                out[m] += w[m, k] * y[inverse[m, k]]
    local = ep_dispatch_ref.local_ids(ids, expert_map, L)
    want = (w * torch.where(local >= 0, local + 2, 0).double()).sum(1, keepdim=True) * x
    torch.testing.assert_close(out, want)


def test_ep_dispatch_without_map_and_nothing_local():
    ids = torch.tensor([[0, 2], [1, 2], [2, 0]], dtype=torch.int32)
    outs = _poisoned(3, 2, 3)
    rj.ep_dispatch(ids, None, 3, outs=outs)
    assert outs[0].tolist() == [0, 2, 1, 0, 1, 2]
    assert outs[1].tolist() == [[0, 3], [2, 4], [5, 1]]
    assert outs[2].tolist() == [0, 2, 3, 6]
    none_local = torch.full((8,), -1, dtype=torch.int32)
    outs = _poisoned(3, 2, 2)
    rj.ep_dispatch(ids, none_local, 2, outs=outs)
    assert outs[0].tolist() == [-1] * 6 and outs[1].tolist() == [[-1, -1]] * 3 and outs[2].tolist() == [0, 0, 0]
