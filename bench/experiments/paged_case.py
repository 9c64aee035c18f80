"""The paged decode step the decode experiments time: one query token per
sequence, a random block table over B * cdiv(context, page) pages, every
sequence `context` tokens long."""


def paged_case(B, context, page, hq, hk, d, dtype, dev="cuda"):
    """(q, k_cache, v_cache, block_table, cache_seqlens) on `dev`."""
    import torch

    blocks = -(-context // page)
    k = torch.randn(B * blocks, page, hk, d, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    table = torch.randperm(B * blocks, device=dev).view(B, blocks).to(torch.int32)
    q = torch.randn(B, 1, hq, d, device=dev, dtype=dtype)
    cs = torch.full((B,), context, dtype=torch.int32, device=dev)
    return q, k, v, table, cs
