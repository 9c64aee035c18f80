"""Float64 attention reference shared by the flash GPU tests."""
import torch

# The flash GPU tests' bounds on rel_err against the float64 reference (fp32
# runs tf32 dots): one table, so a new test cannot drift from the others.
FWD_TOL = {torch.float16: 4e-3, torch.bfloat16: 2.5e-2, torch.float32: 4e-3}
LSE_TOL = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 2e-3}
GRAD_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-2}


def causal_visible(sq, sk, causal_code, device):
    """Boolean [sq, sk]: which keys each query sees (0 none, 1 top-left, 2 bottom-right)."""
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    if causal_code == 0:
        return torch.ones(sq, sk, dtype=torch.bool, device=device)
    diag = 0 if causal_code == 1 else sk - sq
    return j <= i + diag


def attention_ref(q, k, v, scale, causal_code=0, keep=None, dropout_p=0.0):
    """q [B, Sq, Hq, D], k/v [B, Sk, Hk, D] -> (out [B, Sq, Hq, D] f64, lse [B, Hq, Sq] f64).
    keep: optional [B, Hq, Sq, Sk] bool dropout keep mask."""
    B, Sq, Hq, D = q.shape
    Hk = k.shape[2]
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))  # B, H, S, D
    kd = kd.repeat_interleave(Hq // Hk, dim=1)
    vd = vd.repeat_interleave(Hq // Hk, dim=1)
    s = (qd @ kd.transpose(-1, -2)) * scale
    vis = causal_visible(Sq, k.shape[1], causal_code, q.device)
    s = s.masked_fill(~vis, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    if keep is not None:
        p = p * keep.double() / (1.0 - dropout_p)
    out = (p @ vd).transpose(1, 2)
    return out, lse


def rel_err(out, ref):
    assert torch.isfinite(out).all(), "non-finite (or NaN-poisoned, unwritten) output"
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
