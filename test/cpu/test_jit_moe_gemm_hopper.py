"""python/jit/moe_gemm_hopper.py without a GPU: each form's launcher subscripts its Gluon
kernel with the operator's grid (a shadowing import once made it subscript the rule:
four GPU test failures, 2026-12-05). The kernels are replaced by recorders; the
launcher's own work (config, TMA view, grid) runs as written."""
import pytest
import torch
from kernel_recorder import KernelRecorder

from python.jit import moe_gemm_hopper as launcher
from tritonsrc.moe import grouped_gemm_hopper_persistent


def _operands(E=2, N=256, K=128, slots=64):
    a = torch.randn(slots, K, dtype=torch.bfloat16)
    b = torch.randn(E, N, K, dtype=torch.bfloat16)
    c = torch.empty(slots, N, dtype=torch.bfloat16)
    ids = torch.arange(256, dtype=torch.int32)
    experts = torch.zeros(2, dtype=torch.int32)
    return a, b, c, ids, experts, torch.tensor([256], dtype=torch.int32)


@pytest.mark.parametrize("num_programs", [0, 5])
def test_each_form_launches_its_gluon_kernel(monkeypatch, num_programs):
    per_tile, persistent = KernelRecorder(), KernelRecorder()
    monkeypatch.setattr(launcher, "fused_moe_gemm_hopper", per_tile)
    monkeypatch.setattr(grouped_gemm_hopper_persistent, "fused_moe_gemm_hopper_persistent", persistent)
    a, b, c, ids, experts, total = _operands()
    launcher.invoke_grouped_gemm_hopper(a, b, c, None, ids, experts, total, top_k=1, num_programs=num_programs)
    ran, idle = (persistent, per_tile) if num_programs else (per_tile, persistent)
    assert len(ran.calls) == 1 and not idle.calls
    grid, args, kwargs = ran.calls[0]
    cfg = {k: kwargs[k] for k in ("BLOCK_M", "BLOCK_N")}
    assert grid == ((num_programs, ) if num_programs else
                    (-(-256 // cfg["BLOCK_M"]) * -(-256 // cfg["BLOCK_N"]), ))
    assert args[0] is a and args[2] is c
