"""python/jit/flash_fwd_hopper.attn_fwd_hopper_varlen_jit without a GPU: the kernel is replaced by a
recorder, the launcher's own work (the rule's default config, the descriptors over the packed tensors as
one batch, the grid, the argument values) runs as written."""
import math

import pytest
import torch

pytest.importorskip("triton.experimental.gluon.nvidia.hopper")

from kernel_recorder import KernelRecorder  # noqa: E402

from python.jit import flash_fwd_hopper as launcher  # noqa: E402
from python.rules_flash_hopper import attn_fwd_hopper_varlen as RULE  # noqa: E402
from tritonsrc.flash import fwd_hopper_varlen  # noqa: E402


@pytest.mark.parametrize("D", RULE.functional["BLOCK_DMODEL"])
def test_varlen_launcher_passes_the_packed_call(monkeypatch, D):
    recorder = KernelRecorder()
    monkeypatch.setattr(fwd_hopper_varlen, "attn_fwd_hopper_varlen", recorder)
    # The JIT form: the AOT form's launch compiles the rule's kernel and needs a GPU.
    monkeypatch.setenv("AOTRITON_JIT_AOT_FORM", "0")
    lens_q, lens_k, Hq, Hk = [5, 300, 17], [7, 290, 1], 4, 2
    q = torch.randn(sum(lens_q), Hq, D, dtype=torch.bfloat16)
    k, v = (torch.randn(sum(lens_k), Hk, D, dtype=torch.bfloat16) for _ in range(2))
    cu_q = torch.tensor([0, 5, 305, 322], dtype=torch.int32)
    cu_k = torch.tensor([0, 7, 297, 298], dtype=torch.int32)
    out, lse = launcher.attn_fwd_hopper_varlen_jit(q, k, v, cu_q, cu_k, 300, 290, 1 / math.sqrt(D), 2)
    assert out.shape == q.shape and lse.shape == (Hq, q.shape[0])
    (grid, args, kwargs), = recorder.calls
    assert tuple(grid)[:2] == (math.ceil(300 / 128), 3 * Hq)
    functional = {"dtype": "bf16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": 2}
    default = RULE.tuning.default(functional, 90)
    for name in ("BLOCK_N", "NUM_STAGES", "SCHEDULE", "num_warps"):
        assert kwargs[name] == default[name]
    assert kwargs["BLOCK_DMODEL"] == D and kwargs["CAUSAL_TYPE"] == 2
    q_desc = args[0]
    # [1, H, D/64, total, 64]: the packed rows as one batch, 64-column boxes of 128 query rows
    assert list(q_desc.shape) == [1, Hq, D // 64, q.shape[0], 64] and list(q_desc.block_shape)[-2:] == [128, 64]
    k_desc = args[1]
    assert list(k_desc.shape) == [1, Hk, D // 64, k.shape[0], 64]
    assert list(k_desc.block_shape)[-2] == default["BLOCK_N"]
    named = dict(zip([a.name for a in RULE.args], args))
    assert named["cu_seqlens_q"] is cu_q and named["cu_seqlens_k"] is cu_k
    assert (named["max_seqlen_q"], named["max_seqlen_k"], named["total_q"], named["total_k"]) == (300, 290, 322, 298)
