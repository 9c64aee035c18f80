"""Float64 stand-ins for aotriton's flash_attn_func / flash_attn_varlen_func /
fused_experts in flash-attn's definitions (bottom-right causal alignment,
window_size, softcap, GQA), for the transformers adapter tests on the CPU:
with them in place, what is tested is the adapter's own logic."""
import torch
import torch.nn.functional as F

from feature_ref import attention

_NO_WINDOW = (-1, -1)


def ref_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=_NO_WINDOW,
                        softcap=0.0, **kwargs):
    """(B, S, H, D) attention in float64; rows that see no key give 0 (as the kernels)."""
    assert dropout_p == 0.0 and not kwargs, kwargs
    Hq, D = q.shape[2], q.shape[3]
    rep = Hq // k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    outs = []
    for b in range(q.shape[0]):
        qh, kh, vh = (t[b].transpose(0, 1).double() for t in (q, k, v))
        out, _ = attention(qh, kh.repeat_interleave(rep, 0), vh.repeat_interleave(rep, 0), scale,
                           2 if causal else 0, tuple(window_size), float(softcap))
        outs.append(out.transpose(0, 1))
    return torch.stack(outs).to(q.dtype)


def ref_flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False,
                               **kwargs):
    assert int((cu_q[1:] - cu_q[:-1]).max()) <= max_q and int((cu_k[1:] - cu_k[:-1]).max()) <= max_k
    outs = []
    for i in range(cu_q.numel() - 1):
        qs, ks = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        outs.append(ref_flash_attn_func(q[None, qs], k[None, ks], v[None, ks], dropout_p, softmax_scale, causal,
                                        **kwargs)[0])
    return torch.cat(outs)


def ref_fused_experts(x, w1, w2, topk_weights, topk_ids, activation="silu", **kwargs):
    act = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[activation]
    out = torch.zeros_like(x, dtype=torch.float64)
    for j in range(topk_ids.shape[1]):
        for e in range(w1.shape[0]):
            rows = (topk_ids[:, j] == e).nonzero()[:, 0]
            if rows.numel():
                gate, up = (x[rows].double() @ w1[e].double().T).chunk(2, -1)
                y = (act(gate) * up) @ w2[e].double().T
                out[rows] += topk_weights[rows, j, None].double() * y
    return out.to(x.dtype)


def install(monkeypatch, integ):
    """Replace the adapter module's kernel entry points with the references."""
    monkeypatch.setattr(integ._flash, "flash_attn_func", ref_flash_attn_func)
    monkeypatch.setattr(integ._flash, "flash_attn_varlen_func", ref_flash_attn_varlen_func)
    monkeypatch.setattr(integ._moe, "fused_experts", ref_fused_experts)


def padded_batch(B=3, S=11, pad=(0, 4, 7), side="left", vocab=97):
    """(input_ids, attention_mask) of the tiny models: row b padded by pad[b] tokens on `side`."""
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (B, S))
    mask = torch.ones(B, S, dtype=torch.long)
    for b, p in enumerate(pad):
        if side == "left":
            mask[b, :p] = 0
        else:
            mask[b, S - p:] = 0
    return ids, mask
