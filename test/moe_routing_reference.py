"""float64 torch references of the grouped top-k router (vLLM's grouped_topk,
DeepSeek-V3 semantics) and tie-free random inputs for testing it."""
import torch


def grouped_topk_ref(logits, topk, renormalize=False, num_expert_group=1, topk_group=1, scoring_func="softmax",
                     bias=None, routed_scaling_factor=1.0, margin=None):
    """Returns (weights f64 [M, topk], ids int64 [M, topk]) and, with margin,
    also a bool [M] mask of rows whose group and expert choices (and their
    order) are decided by more than margin (rows safe to compare exactly)."""
    x = logits.double()
    scores = torch.softmax(x, dim=-1) if scoring_func == "softmax" else torch.sigmoid(x)
    M, E = scores.shape
    sel = scores if bias is None else scores + bias.double()[None, :]
    grouped = sel.view(M, num_expert_group, E // num_expert_group)
    if bias is None:
        gscore = grouped.max(dim=-1).values
    else:
        gscore = grouped.topk(2, dim=-1).values.sum(-1)
    gsorted, gidx = torch.sort(gscore, dim=-1, descending=True, stable=True)
    gmask = torch.zeros_like(gscore, dtype=torch.bool).scatter_(1, gidx[:, :topk_group], True)
    emask = gmask[:, :, None].expand(M, num_expert_group, E // num_expert_group).reshape(M, E)
    masked = sel.masked_fill(~emask, float("-inf"))
    ssorted, ids = torch.sort(masked, dim=-1, descending=True, stable=True)
    ids = ids[:, :topk]
    w = scores.gather(1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    w = w * routed_scaling_factor
    if margin is None:
        return w, ids
    ok = torch.ones(M, dtype=torch.bool)
    if topk_group < num_expert_group:  # only the kept/dropped boundary matters
        ok &= (gsorted[:, topk_group - 1] - gsorted[:, topk_group]) > margin
    n = min(topk + 1, int(emask[0].sum()))
    ok &= (ssorted[:, :n].diff(dim=-1).abs() > margin).all(-1)
    return w, ids, ok


def tie_free_case(M, E, dtype, topk, num_expert_group=1, topk_group=1, scoring_func="softmax", with_bias=False,
                  margin=1e-4, device="cpu", gen=None):
    """Random logits [M, E] (and a bias [E] fp32) whose routing has no near
    ties: rows with a margin below `margin` are drawn again."""
    gen = gen or torch.Generator().manual_seed(0)
    bias = (torch.rand(E, generator=gen) * 0.2 - 0.1) if with_bias else None
    logits = torch.randn(M, E, generator=gen).to(dtype)
    for _ in range(50):
        _, _, ok = grouped_topk_ref(logits, topk, False, num_expert_group, topk_group, scoring_func, bias,
                                    margin=margin)
        bad = (~ok).nonzero().flatten()
        if bad.numel() == 0:
            break
        logits[bad] = torch.randn(bad.numel(), E, generator=gen).to(dtype)
    else:
        raise RuntimeError("could not draw tie-free routing data")
    return logits.to(device), (None if bias is None else bias.to(device))
