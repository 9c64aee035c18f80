"""The Gluon Hopper flash forward experiment (bench/experiments/flash_fwd_gluon*.py)
compiles for sm_90 without a GPU, without spills, inside the shared-memory
limit, and its softmax really overlaps the tensor cores in the SASS; the
launcher rejects what the kernel cannot run. Two variants by default (a few
seconds each); AOTRITON_GLUON_COMPILE_ALL=1 compiles every variant.
The GPU run (correctness against float32 + benchmark) is
`python bench/experiments/flash_fwd_gluon.py --check --bench` (docs/notes-flash-perf.md)."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
torch = pytest.importorskip("torch")

from bench.experiments import flash_fwd_gluon_compile as gc  # noqa: E402

# 227 KiB: the most dynamic shared memory one sm_90 block may use.
SM90_MAX_SHARED = 232448

VARIANTS = gc.ALL_VARIANTS if os.environ.get("AOTRITON_GLUON_COMPILE_ALL") == "1" else gc.DEFAULT_VARIANTS


@pytest.mark.parametrize("variant", VARIANTS, ids=gc.variant_name)
def test_compiles_for_sm90(variant):
    compiled = gc.compile_variant(variant)
    info = gc.summary(compiled)
    head_dim, _causal, block_m, block_n, stages, schedule, _warps = variant
    assert info["local"] == 0 and info["stack"] == 0, f"register spills: {info}"
    assert info["n_regs"] <= 255
    # Q tile + NUM_STAGES (K, V) tiles of 2-byte elements, plus the mbarriers.
    tiles = (block_m + 2 * stages * block_n) * head_dim * 2
    assert tiles <= info["shared"] <= SM90_MAX_SHARED, info
    ptx = compiled.asm["ptx"]
    assert "cp.async.bulk.tensor.2d" in ptx, "K/V/Q should arrive by TMA"
    if schedule >= 3:
        # Warp-specialized: two consumer warpgroups + a loader warp (padded to
        # a warpgroup), registers moved between them with setmaxnreg.
        assert info["num_warps"] == 12 and "setmaxnreg" in ptx, info
    if schedule == 2:
        # Every exponential of the loop's softmax (64 per thread at BLOCK_N 128,
        # 32 at 64) plus the rescale factor runs under an outstanding wgmma.
        assert info["ex2_overlapped"] >= block_n * block_m // 256, info


def _qkv(batch=1, seqlen=128, hq=2, hk=2, head_dim=64, dtype=torch.float16):
    return (torch.randn(batch, seqlen, hq, head_dim, dtype=dtype),
            torch.randn(batch, seqlen, hk, head_dim, dtype=dtype),
            torch.randn(batch, seqlen, hk, head_dim, dtype=dtype))


@pytest.mark.parametrize("bad, match", [
    (dict(dtype=torch.float32), "fp16 or bf16"),
    (dict(head_dim=96), "head_dim must be 64 or 128"),
    (dict(hq=3, hk=2), "multiple of num_heads_k"),
    (dict(seqlen=0), "empty input"),
])
def test_launcher_rejects_unsupported_inputs(bad, match):
    from bench.experiments.flash_fwd_gluon import attn_fwd_gluon_jit
    q, k, v = _qkv(**bad)
    with pytest.raises(ValueError, match=match):
        attn_fwd_gluon_jit(q, k, v, sm_scale=0.125)


def test_launcher_rejects_strided_head_dim_and_bad_causal():
    from bench.experiments.flash_fwd_gluon import attn_fwd_gluon_jit
    q, k, v = _qkv()
    k_strided = torch.randn(1, 128, 2, 128, dtype=q.dtype)[..., ::2]  # head dim stride 2
    with pytest.raises(ValueError, match="contiguous"):
        attn_fwd_gluon_jit(q, k_strided, v, sm_scale=0.125)
    with pytest.raises(ValueError, match="causal_type"):
        attn_fwd_gluon_jit(q, k, v, sm_scale=0.125, causal_type=3)
    with pytest.raises(ValueError, match="unknown variant"):
        attn_fwd_gluon_jit(q, k, v, sm_scale=0.125, variant="nope")
    with pytest.raises(ValueError, match="out must be like q"):
        attn_fwd_gluon_jit(q, k, v, sm_scale=0.125, out=torch.empty(1, 128, 2, 32, dtype=q.dtype))


def _gluon_rule():
    """An attn_fwd_gluon rule in the vocabulary of python/rules*.py (declared
    here, not in the build: the kernel is an experiment)."""
    sys.path.insert(0, str(REPO / "python"))
    from kernel_rules import Arg, Kernel, TuningSpace
    ints = ["stride_qz", "stride_qh", "stride_qm", "stride_kz", "stride_kh", "stride_kn",
            "stride_vz", "stride_vh", "stride_vn", "stride_oz", "stride_oh", "stride_om",
            "stride_lse_z", "stride_lse_h", "num_heads_q", "num_heads_k", "seqlen_q", "seqlen_k"]
    args = ([Arg(n, "*{dtype}:16") for n in "QKVO"] + [Arg("LSE", "*fp32:16"), Arg("sm_scale", "fp32")]
            + [Arg(n, "i32") for n in ints])
    return Kernel(
        name="attn_fwd_gluon", source="bench/experiments/flash_fwd_gluon_kernel.py", function="attn_fwd_gluon",
        args=args, functional={"dtype": ["fp16", "bf16"], "HEAD_DIM": [64, 128], "CAUSAL_TYPE": [0, 1, 2]},
        tuning=TuningSpace(params={"BLOCK_M": [128], "BLOCK_N": [64, 128], "NUM_STAGES": [3, 4],
                                   "SCHEDULE": [0, 1, 2], "num_warps": [8]},
                           default=lambda f, arch: {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3,
                                                    "SCHEDULE": 2, "num_warps": 8}),
        grid=("cdiv(seqlen_q, BLOCK_M)", "num_seqs * num_heads_q", "1"))


def test_aot_compile_path_takes_gluon_kernels(monkeypatch):
    """python/compile_kernel.py (the ninja compile edge) builds a Gluon kernel
    from a rule like any Triton kernel. always_compile: ASTSource and
    GluonASTSource hash alike, so a cache hit would hide the wrong source class."""
    import triton
    sys.path.insert(0, str(REPO / "python"))
    import compile_kernel
    monkeypatch.setattr(triton.knobs.compilation, "always_compile", True)
    rule = _gluon_rule()
    functional = {"dtype": "fp16", "HEAD_DIM": 64, "CAUSAL_TYPE": 1}
    config = rule.tuning.default(functional, 90)
    fn = compile_kernel.load_kernel_function(rule)
    assert type(compile_kernel.build_source(rule, fn, functional, config)).__name__ == "GluonASTSource"
    compiled = compile_kernel.compile_one(rule, functional, config, 90)
    meta = compile_kernel.metadata_json(compiled, "cfg", "x.cubin")
    assert meta["symbol"] == "attn_fwd_gluon" and meta["num_warps"] == 8
    # The runtime must pass a global scratch buffer: the TMA descriptors live there.
    assert meta["global_scratch_size"] >= 4 * 128
    info = gc.summary(compiled)
    assert info["local"] == 0 and info["ex2_overlapped"] >= 64, info


class _FakeHopperDriver:
    """Just enough of a Triton driver for JITFunction.warmup to compile for
    sm_90 on a machine without a GPU (nothing is launched)."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


@pytest.mark.parametrize("variant", ["nextqk_n128_s3", "pingpong_n128_s3"])
def test_jit_launcher_arguments_compile_for_sm90(variant, monkeypatch):
    """The launcher's own arguments (bench/experiments/flash_fwd_gluon.py:
    launch_plan) bind to the kernel and compile through the JIT for sm_90:
    the GPU run will not stop at a signature mismatch."""
    from triton.runtime.driver import driver
    from bench.experiments.flash_fwd_gluon import launch_plan
    q = torch.randn(2, 300, 4, 64, dtype=torch.bfloat16)
    k = torch.randn(2, 457, 2, 64, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kernel, grid, args, kwargs, o, lse = launch_plan(q, k, v, sm_scale=0.125, causal_type=2, variant=variant)
    assert grid == (3, 8) and o.shape == q.shape and lse.shape == (2, 4, 300)
    # monkeypatch restores the lazily created default (reset_active() would
    # create the real one, which fails without a GPU).
    monkeypatch.setattr(driver, "_active", _FakeHopperDriver())
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    assert compiled.metadata.num_warps == (12 if variant.startswith("pingpong") else 8)
    assert compiled.metadata.global_scratch_size > 0
