"""The MoE grouped-GEMM experiment (bench/experiments/moe_gemm_tma*.py) binds
its launch arguments to its kernels and compiles them for sm_90 without a GPU
(Triton's JIT on a stand-in driver): the GPU run will not stop at a signature
mismatch, and the weights really arrive by TMA (host descriptors), without
spills, inside sm_90's shared memory. A tile variant and two persistent ones
(with and without descriptors) at the bench's tile sizes (a few seconds each)."""

import pytest


torch = pytest.importorskip("torch")
pytest.importorskip("triton.tools.tensor_descriptor")

from bench.experiments import moe_gemm_tma as X  # noqa: E402

SM90_MAX_SHARED = 232448


class _FakeHopperDriver:
    """Just enough of a Triton driver for JITFunction.warmup to compile for sm_90."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def _case(gemm):
    spec = dict(E=4, topk=2, K=256, N=512)
    n_out, k_in = (2 * spec["N"], spec["K"]) if gemm == 1 else (spec["K"], spec["N"])
    w = torch.randn(spec["E"], n_out, k_in, dtype=torch.bfloat16)
    return X.Case("t", spec, 40, gemm, "random", w, torch.bfloat16, "cpu")


@pytest.mark.parametrize("variant, gemm", [("tma", 1), ("persist_sortedA", 2), ("persist_ptr", 2)])
def test_experiment_launches_compile_for_sm90(variant, gemm, monkeypatch):
    from triton.runtime.driver import driver
    kind, opts, cfgs = X.VARIANTS[variant]
    case = _case(gemm)
    kernel, grid, args, kwargs = X.launch_spec(kind, opts, cfgs[0], case, num_sms=132)
    monkeypatch.setattr(driver, "_active", _FakeHopperDriver())
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    ptx = compiled.asm["ptx"]
    assert ("cp.async.bulk.tensor.3d" in ptx) == opts["B_TMA"], "the expert weights arrive by TMA iff B_TMA"
    if opts["A_SORTED"]:
        assert "cp.async.bulk.tensor.2d" in ptx and "cp.async.ca" not in ptx and "cp.async.cg" not in ptx
    else:
        assert "cp.async.cg" in ptx or "cp.async.ca" in ptx, "gathered A rows by cp.async"
    assert "wgmma.mma_async" in ptx
    from bench.experiments.moe_gemm_tma_compile import sass_summary
    info = sass_summary(compiled)
    assert info["stack"] == 0 and info["local"] == 0, f"register spills: {info}"
    assert (info["tma_loads"] > 0) == (opts["B_TMA"] or opts["A_SORTED"]) and info["hgmma"] > 0, info
    assert info["shared"] <= SM90_MAX_SHARED, info


def test_tma_persistent_grid_is_one_program_per_sm():
    kind, opts, cfgs = X.VARIANTS["persist"]
    _, grid, args, _ = X.launch_spec(kind, opts, cfgs[0], _case(1), num_sms=132)
    assert grid == (132, 1, 1) and args[-1] == 132


def test_torch_align_matches_moe_align_layout():
    """The experiment's torch moe_align: every slot listed once, in its
    expert's blocks, sentinels elsewhere, padded per expert to BLOCK_M."""
    ids = torch.tensor([[2, 0], [2, 1], [0, 2], [2, 3]], dtype=torch.int32)
    s, e, n = X.align(ids, 4, 4)
    assert s.numel() == 8 + 4 * 3 and n.item() == 16  # counts 2,1,3,1 -> 4 blocks of 4
    flat = ids.reshape(-1)
    valid = s[:16][s[:16] < 8].tolist()
    assert sorted(valid) == list(range(8))
    for blk in range(4):
        rows = s[blk * 4:(blk + 1) * 4]
        assert all(flat[r].item() == e[blk].item() for r in rows.tolist() if r < 8)
    assert (e[4:] == -1).all() and (s[16:] == 8).all()


def test_compile_jobs_dedupe_like_triton_specializes():
    """Launches that differ only in do_not_specialize sizes share one compile
    job; a 16-divisibility change of a specialized size does not."""
    spec = dict(E=4, topk=2, K=256, N=512)
    w = torch.randn(spec["E"], 2 * spec["N"], spec["K"], dtype=torch.bfloat16)
    cases = [X.Case("t", spec, m, 1, "random", w, torch.bfloat16, "cpu") for m in (40, 57)]
    kind, opts, cfgs = X.VARIANTS["tma"]
    keys = {X._specialization(X._portable(kind, *X.launch_spec(kind, opts, cfgs[0], c, 132)[1:])) for c in cases}
    assert len(keys) == 1
    narrow = X.Case("t", dict(spec, K=264), 40, 1, "random", torch.randn(4, 1024, 264, dtype=torch.bfloat16),
                    torch.bfloat16, "cpu")
    keys.add(X._specialization(X._portable(kind, *X.launch_spec(kind, opts, cfgs[0], narrow, 132)[1:])))
    assert len(keys) == 2


@pytest.mark.parametrize("variant, gemm", [("gluon_ws_sortedA", 1), ("gluon_ws_sortedA", 2), ("gluon_ws", 1),
                                           ("gluon_ws_persist_sortedA", 2)])
def test_gluon_ws_variant_compiles_for_sm90(variant, gemm, monkeypatch):
    """The warp-specialized Gluon variants: loader partitions plus two consumer
    warpgroups (setmaxnreg), B (and sorted A) by TMA, gathered A by cp.async,
    wgmma, no spills."""
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    from triton.runtime.driver import driver
    kind, opts, cfgs = X.VARIANTS[variant]
    case = _case(gemm)
    kernel, grid, args, kwargs = X.launch_spec(kind, opts, cfgs[0], case, num_sms=132)
    monkeypatch.setattr(driver, "_active", _FakeHopperDriver())
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    ptx = compiled.asm["ptx"]
    assert "cp.async.bulk.tensor.2d" in ptx and "wgmma.mma_async" in ptx and "setmaxnreg" in ptx
    assert ("cp.async.cg" in ptx or "cp.async.ca" in ptx) == (not opts["A_SORTED"])
    from bench.experiments.moe_gemm_tma_compile import sass_summary
    info = sass_summary(compiled)
    assert info["stack"] == 0 and info["local"] == 0, f"register spills: {info}"
    assert info["shared"] <= SM90_MAX_SHARED, info
    # 4 + 4 consumers, the loader partitions (1 warp; 1 + 2 with the A gatherer) padded to a warpgroup
    assert compiled.metadata.num_warps == 12
    # The same launch survives the trip to a compile worker.
    job = X._portable(kind, grid, args, kwargs)
    assert X._warm(job) is None
