"""Random flash-attention inputs for the interpreter tests, batched or packed
(varlen), with the JIT launchers' sequence keyword arguments."""
import torch


def flash_inputs(lens_q, lens_k, hq, hk, d, dv, dtype, varlen):
    """(q, k, v, do, extra, lse_shape, per_sequence): per-sequence q [n, hq, d],
    k [n, hk, d], v [n, hk, dv], dO [n, hq, dv] (the lists, for references)
    stacked (batched: every length equal) or concatenated with
    cu_seqlens/max_seqlen in `extra` (varlen)."""
    qs = [torch.randn(n, hq, d).to(dtype) for n in lens_q]
    ks = [torch.randn(n, hk, d).to(dtype) for n in lens_k]
    vs = [torch.randn(n, hk, dv).to(dtype) for n in lens_k]
    dos = [torch.randn(n, hq, dv).to(dtype) for n in lens_q]
    if varlen:
        q, k, v, do = (torch.cat(ts) for ts in (qs, ks, vs, dos))
        cu = {f"cu_seqlens_{n}": torch.tensor([0] + lens, dtype=torch.int32).cumsum(0).to(torch.int32)
              for n, lens in (("q", lens_q), ("k", lens_k))}
        extra = dict(**cu, max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k))
        return q, k, v, do, extra, (hq, sum(lens_q)), (qs, ks, vs, dos)
    assert len(set(lens_q)) == 1 and len(set(lens_k)) == 1
    q, k, v, do = (torch.stack(ts) for ts in (qs, ks, vs, dos))
    return q, k, v, do, {}, (len(lens_q), hq, lens_q[0]), (qs, ks, vs, dos)
