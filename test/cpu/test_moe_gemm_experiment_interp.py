"""The MoE grouped-GEMM experiment's kernels (bench/experiments/moe_gemm_tma*.py)
under the interpreter on tiny fp16 shapes (K and 2N not multiples of the
tiles, padding blocks, a GROUP_M of 2), through the experiment's own check
against float32; and the check itself fails on a wrong answer."""

import pytest


torch = pytest.importorskip("torch")
pytest.importorskip("triton.tools.tensor_descriptor")

from bench.experiments import moe_gemm_tma as X  # noqa: E402


def test_every_variant_passes_the_float32_check(capsys):
    rc = X.main(["--smoke", "--check", "--tokens", "24", "--routing", "random"])
    out = capsys.readouterr().out
    assert rc == 0, out
    checked = [line for line in out.splitlines() if line.startswith("ok ")]
    # 2 GEMMs x every variant x 2 smoke configs, none failing
    interpretable = [v for v, (kind, _, _) in X.VARIANTS.items() if not kind.startswith("gluon")]
    assert len(checked) == 2 * len(interpretable) * len(X.SMOKE_CONFIGS), out
    assert "FAIL" not in out


@pytest.mark.parametrize("variant", ["tma", "persist_sortedA"])
def test_check_catches_a_wrong_expert(variant):
    """Blocks pointed at the wrong expert's weights must fail the check."""
    torch.manual_seed(0)
    spec = X.SMOKE_LAYER
    w = torch.randn(spec["E"], 2 * spec["N"], spec["K"], dtype=torch.float16) / spec["K"] ** 0.5
    case = X.Case("smoke", spec, 24, 1, "balanced", w, torch.float16, "cpu")
    kind, opts, _ = X.VARIANTS[variant]
    cfg = X.SMOKE_CONFIGS[0]
    kernel, grid, args, kwargs = X.launch_spec(kind, opts, cfg, case, num_sms=4)
    case.c.fill_(float("nan"))
    kernel[grid](*args, **kwargs)
    assert case.error() < X.TOL
    e = case.aligned(cfg[0])[1]
    valid = e >= 0
    e[valid] = (e[valid] + 1) % spec["E"]
    case.c.fill_(float("nan"))
    kernel[grid](*args, **kwargs)
    assert case.error() > 0.5
