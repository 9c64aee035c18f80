"""bench_common.expert_bytes, the decode roofline's bytes per touched expert that bench_moe,
bench_pdl and bench_moe_coverage share."""
import importlib.util
from pathlib import Path

import pytest


def _bench_common():
    """bench/bench_common.py by its path (bench/ holds scripts, not a package on the path)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_expert_bytes_counts_every_per_expert_slice_once():
    torch = pytest.importorskip("torch")
    expert_bytes = _bench_common().expert_bytes

    E, N, K = 8, 256, 512
    w1 = torch.zeros(E, 2 * N, K // 2, dtype=torch.uint8)  # int4, two per byte: 131072 bytes an expert
    w2 = torch.zeros(E, K, N // 2, dtype=torch.uint8)  # 65536
    s1, s2 = torch.zeros(E, 2 * N, K // 128), torch.zeros(E, K, N // 128)  # fp32: 8192 and 4096
    z1 = torch.zeros(E, N, K // 128, dtype=torch.uint8)  # 1024
    assert expert_bytes(w1, w2) == 131072 + 65536
    assert expert_bytes(w1, w2, s1, s2, z1, None) == 131072 + 65536 + 8192 + 4096 + 1024
    # A per-expert scalar scale ([E]) counts 4 bytes; a per-tensor one ([1]) counts nothing.
    assert expert_bytes(w1, w2, torch.zeros(E)) == expert_bytes(w1, w2) + 4
    assert expert_bytes(w1, w2, torch.zeros(1)) == expert_bytes(w1, w2)
