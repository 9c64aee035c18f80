"""float64 references of the MoE gated activations by name (vLLM's names)."""
import torch


def swigluoai_ref(x, alpha=1.702, limit=7.0):
    """gpt-oss / vLLM swigluoai_and_mul: interleaved gate x[:, 0::2], up x[:, 1::2]."""
    x = x.double()
    gate = x[..., 0::2].clamp(max=limit)
    up = x[..., 1::2].clamp(-limit, limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1)


def act_and_mul_ref(x, name):
    """[rows, 2N] -> [rows, N] float64 for silu / swiglu / gelu / gelu_tanh / swigluoai."""
    if name == "swigluoai":
        return swigluoai_ref(x)
    x = x.double()
    n = x.shape[-1] // 2
    gate, up = x[..., :n], x[..., n:]
    if name in ("silu", "swiglu"):
        return torch.nn.functional.silu(gate) * up
    approximate = {"gelu": "none", "gelu_tanh": "tanh"}[name]
    return torch.nn.functional.gelu(gate, approximate=approximate) * up
