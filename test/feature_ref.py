"""Float64 reference for the attention features (sliding window, softcap,
ALiBi) in flash-attn's definitions, shared by the CPU interpreter and GPU tests."""
import math

import torch


def visible(sq, sk, causal_type, window=(-1, -1), device="cpu"):
    """bool [sq, sk]: query i sees key j. causal_type 1 top-left, 2 bottom-right;
    a window without causal is bottom-right aligned (flash-attn)."""
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    diag = 0 if causal_type == 1 else sk - sq
    left, right = window
    if causal_type != 0:
        right = 0
    ok = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        ok &= j >= i + diag - left
    if right >= 0:
        ok &= j <= i + diag + right
    return ok


def scores(q, k, scale, softcap=0.0, slopes=None):
    """q (H, Sq, D), k (H, Sk, D), slopes (H,) -> modified scaled scores (H, Sq, Sk)."""
    s = q @ k.transpose(-1, -2) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        sq, sk = q.shape[-2], k.shape[-2]
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s - slopes[:, None, None].to(s.dtype) * (i + sk - sq - j).abs().to(s.dtype)
    return s


def attention(q, k, v, scale, causal_type=0, window=(-1, -1), softcap=0.0, slopes=None):
    """(out, lse) per head; rows that see no key: out 0, lse -inf. Differentiable."""
    s = scores(q, k, scale, softcap, slopes)
    ok = visible(q.shape[-2], k.shape[-2], causal_type, window, q.device)
    s = s.masked_fill(~ok, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None].masked_fill(lse[..., None] == -math.inf, 0.0))
    return p @ v, lse
