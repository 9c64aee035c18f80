"""Torch reference of the expert-parallel dispatch/combine indices and random
expert maps (global id -> local id or -1)."""
import torch


def random_expert_map(num_global, num_local, gen):
    """A random injective map of num_local of the num_global experts onto 0..num_local-1, the rest -1."""
    emap = torch.full((num_global,), -1, dtype=torch.int32)
    chosen = torch.randperm(num_global, generator=gen)[:num_local]
    emap[chosen] = torch.randperm(num_local, generator=gen).to(torch.int32)
    return emap


def _local_ids(ids, expert_map, num_local):
    ids = ids.long()
    if expert_map is None:
        local = ids
    else:
        ok = (ids >= 0) & (ids < expert_map.numel())
        local = torch.where(ok, expert_map.long()[ids.clamp(0, expert_map.numel() - 1)], -1)
    return torch.where((local >= 0) & (local < num_local), local, -1)


def ep_dispatch_ref(ids, expert_map, num_local):
    """(sorted_token_ids [numel], inverse [M, topk], expert_offsets [L + 1]) as int64."""
    M, topk = ids.shape
    local = _local_ids(ids, expert_map, num_local).flatten()
    slots = [s for e in range(num_local) for s in (local == e).nonzero().flatten().tolist()]
    total = len(slots)
    sorted_tokens = torch.full((M * topk,), -1, dtype=torch.long)
    inverse = torch.full((M * topk,), -1, dtype=torch.long)
    for p, s in enumerate(slots):
        sorted_tokens[p] = s // topk
        inverse[s] = p
    counts = torch.bincount(local[local >= 0], minlength=num_local)
    offsets = torch.zeros(num_local + 1, dtype=torch.long)
    offsets[1:] = counts.cumsum(0)
    assert offsets[-1] == total
    return sorted_tokens, inverse.view(M, topk), offsets


ep_dispatch_ref.local_ids = _local_ids
