"""Grouped / sigmoid top-k router under TRITON_INTERPRET=1 vs a float64 torch
reference (vLLM's grouped_topk with DeepSeek-V3's bias rule). fp16 / fp32 only
(the interpreter's bf16 is wrong); inputs are drawn without near ties."""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest
import torch

from moe_routing_reference import grouped_topk_ref, tie_free_case  # noqa: E402
from python.jit import moe_routing as rj  # noqa: E402

# (M, E, topk, num_expert_group, topk_group)
CASES = [
    (1, 8, 1, 1, 1),         # plain top-1
    (5, 8, 2, 4, 2),
    (7, 64, 6, 8, 3),        # DeepSeek-V2-Lite-like
    (9, 256, 8, 8, 4),       # DeepSeek-V3
    (3, 160, 6, 8, 3),       # E not a power of two (DeepSeek-V2: 160 experts)
    (4, 12, 12, 3, 3),       # every expert
]


def _poisoned(M, topk):
    return torch.full((M, topk), float("nan")), torch.full((M, topk), -7, dtype=torch.int32)


def _check(logits, bias, topk, renorm, G, TG, scoring, scale, **kw):
    w, ids = _poisoned(logits.shape[0], topk)
    rj.grouped_topk(logits, topk, renorm, G, TG, scoring, bias, scale, out_weights=w, out_ids=ids, **kw)
    rw, rids = grouped_topk_ref(logits, topk, renorm, G, TG, scoring, bias, scale)
    assert torch.equal(ids.long(), rids), (ids, rids)
    torch.testing.assert_close(w.double(), rw, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("M,E,topk,G,TG", CASES)
def test_grouped_topk(dtype, scoring, with_bias, M, E, topk, G, TG):
    gen = torch.Generator().manual_seed(M * 1000 + E + topk)
    logits, bias = tie_free_case(M, E, dtype, topk, G, TG, scoring, with_bias, gen=gen)
    renorm = with_bias  # both settings are covered across the grid
    _check(logits, bias, topk, renorm, G, TG, scoring, 2.5 if with_bias else 1.0)


@pytest.mark.parametrize("renorm,scale", [(False, 1.0), (True, 1.0), (True, 2.5), (False, 0.5)])
def test_renormalize_and_scaling(renorm, scale):
    logits, bias = tie_free_case(6, 64, torch.float32, 6, 8, 3, "sigmoid", True)
    _check(logits, bias, 6, renorm, 8, 3, "sigmoid", scale)


def test_bias_changes_selection_not_weights():
    """DeepSeek-V3: the bias picks the experts, the weights stay the uncorrected scores."""
    E = 16
    logits = torch.linspace(-2, 2, E).repeat(2, 1)  # expert 15 scores highest
    bias = torch.zeros(E)
    bias[0] = 10.0  # expert 0 (the lowest score) wins the selection
    w, ids = rj.grouped_topk(logits, 1, False, 1, 1, "sigmoid", bias)
    assert ids.flatten().tolist() == [0, 0]
    torch.testing.assert_close(w.flatten(), torch.sigmoid(logits[:, 0]))


def test_multi_token_programs_and_strides():
    """Several rows per program, a partial last block and strided logits."""
    logits, bias = tie_free_case(37, 32, torch.float32, 4, 4, 2, "softmax", True)
    wide = torch.randn(37, 80)
    wide[:, 8:72:2] = logits
    _check(wide[:, 8:72:2], bias, 4, True, 4, 2, "softmax", 1.0, block_m=16)


def test_non_finite_logits_give_valid_ids():
    logits = torch.randn(4, 16)
    logits[0, 3] = float("nan")
    logits[1] = float("-inf")
    logits[2, 5] = float("inf")
    logits[3, :8] = float("nan")
    for scoring in ("softmax", "sigmoid"):
        w, ids = rj.grouped_topk(logits, 4, True, 4, 2, scoring)
        assert ((ids >= 0) & (ids < 16)).all()
        assert torch.isfinite(w).all()
        for r in range(4):
            assert len(set(ids[r].tolist())) == 4  # no expert twice
