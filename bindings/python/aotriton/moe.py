"""Mixture-of-experts operators on torch tensors."""
import pyaotriton as _C
import torch

from ._glue import check_cuda, launch_env, view

SILU, GELU, GELU_TANH = 0, 1, 2


def _act_and_mul(x: torch.Tensor, activation: int, out=None, force_config=None) -> torch.Tensor:
    check_cuda(x, "input")
    if x.dim() != 2:
        raise ValueError(f"input must be 2-D [tokens, 2 * N], got shape {tuple(x.shape)}")
    if out is None:
        out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
    stream, guard = launch_env(x)
    with guard:
        _C.act_and_mul(view(out, "out"), view(x, "input"), activation, stream, force_config)
    return out


def silu_and_mul(x: torch.Tensor, out=None, *, force_config=None) -> torch.Tensor:
    """silu(x[:, :N]) * x[:, N:] for x of shape [M, 2N]."""
    return _act_and_mul(x, SILU, out, force_config)


def gelu_and_mul(x: torch.Tensor, out=None, *, approximate: str = "none", force_config=None) -> torch.Tensor:
    """gelu(x[:, :N]) * x[:, N:]; approximate="tanh" for the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act_and_mul(x, GELU if approximate == "none" else GELU_TANH, out, force_config)


def moe_sum(x: torch.Tensor, out=None, *, force_config=None) -> torch.Tensor:
    """Sum over the top-k axis: [M, topk, H] -> [M, H]."""
    check_cuda(x, "input")
    if x.dim() != 3:
        raise ValueError(f"input must be 3-D [tokens, topk, hidden], got shape {tuple(x.shape)}")
    if out is None:
        out = torch.empty((x.shape[0], x.shape[2]), dtype=x.dtype, device=x.device)
    stream, guard = launch_env(x)
    with guard:
        _C.moe_sum(view(out, "out"), view(x, "input"), stream, force_config)
    return out
