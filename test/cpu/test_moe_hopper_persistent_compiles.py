"""The persistent sm_90 MoE grouped GEMM (rules_moe_hopper.fused_moe_gemm_hopper_persistent,
tritonsrc/moe/grouped_gemm_hopper_persistent.py) compiles ahead of time without a GPU:
no spills at the default and at the deepest ring of each tile width, the per-tile
kernel's register split and memory paths, the generated launcher's parameters (with
num_programs last), one program per SM as its grid; planned for sm_90 only. The GPU
side: test/gpu/test_moe_hopper_persistent_gpu.py."""
import re

import pytest

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from python import build_plan, compile_kernel, rules  # noqa: E402
from python.cubin_resources import cuobjdump, resources  # noqa: E402
from python.rules_moe_hopper import fused_moe_gemm_hopper, fused_moe_gemm_hopper_persistent as RULE  # noqa: E402
from test_flash_hopper_compiles import SM90_MAX_SHARED  # noqa: E402
from test_moe_hopper_compiles import compile_gluon_moe_gemm  # noqa: E402

FUNCTIONALS = [{"dtype": d, "MUL_ROUTED_WEIGHT": w} for d in ("fp16", "bf16") for w in (False, True)]


def _corners():
    for f in FUNCTIONALS:
        seen = [RULE.tuning.default(f, 90)]
        space = RULE.tuning.all_configs(f, 90)
        for n in sorted({c["BLOCK_N"] for c in space}):
            seen.append(max((c for c in space if c["BLOCK_N"] == n), key=lambda c: c["NUM_STAGES"]))
        for i, c in enumerate(seen):
            if c not in seen[:i] and (f["dtype"] == "bf16" or i == 0):
                yield f, c


@pytest.mark.parametrize("functional,config", list(_corners()), ids=str)
def test_compiles_without_spills_and_params_match_the_launcher(functional, config):
    compiled, sass = compile_gluon_moe_gemm(RULE, functional, config)
    assert "wgmma.mma_async" in compiled.asm["ptx"]
    assert re.search(r"USETMAXREG\.TRY_ALLOC\S* \S+ 0xe0", sass), "consumer warpgroups raise to 224 registers"


def test_same_contract_as_the_per_tile_kernel_plus_num_programs():
    assert [a.name for a in RULE.args] == [a.name for a in fused_moe_gemm_hopper.args] + ["num_programs"]
    assert RULE.functional == fused_moe_gemm_hopper.functional and RULE.tuning is fused_moe_gemm_hopper.tuning
    assert RULE.grid == ("num_programs", "1", "1")


def test_planned_for_sm90_only_and_the_route_threshold_is_generated():
    from python import rules_moe_hopper, shared_constants

    plan = build_plan.make_plan(rules, "ci", [80, 90])
    entries = next(k for k in plan["kernels"] if k["name"] == RULE.name)["entries"]
    built = {(e["functional"]["dtype"], e["functional"]["MUL_ROUTED_WEIGHT"], v["arch"]) for e in entries
             for v in e["variants"]}
    assert built == {("fp16", False, 90)}, built
    release = next(k for k in build_plan.make_plan(rules, "release", [80, 90])["kernels"] if k["name"] == RULE.name)
    assert {v["arch"] for e in release["entries"] for v in e["variants"]} == {90}
    assert (f"kMoeHopperPersistentMinTokensPerExpert = {rules_moe_hopper.PERSISTENT_MIN_TOKENS_PER_EXPERT};"
            in shared_constants.header())


@pytest.mark.parametrize("quant", [1, 2, 3])
def test_fp8_persistent_form_compiles_without_spills(quant):
    """tritonsrc/moe/grouped_gemm_hopper_fp8_persistent.py (JIT-only until measured: compiled
    here through the fp8 rule's arguments plus num_programs) at each scale mode's default
    (per channel: 128 wide)."""
    import dataclasses

    from python.kernel_rules import Arg
    from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8 as fp8

    rule = dataclasses.replace(fp8, name="fused_moe_gemm_hopper_fp8_persistent",
                               source="tritonsrc/moe/grouped_gemm_hopper_fp8_persistent.py",
                               function="fused_moe_gemm_hopper_fp8_persistent",
                               args=fp8.args + [Arg("num_programs", "i32")], grid=("num_programs", "1", "1"))
    f = {"dtype": "bf16", "QUANT": quant, "MUL_ROUTED_WEIGHT": True}
    config = fp8.tuning.default(f, 90)
    if quant == 3:
        # Its tile loop keeps more state live than the per-tile kernel: per channel at 256 wide
        # spills 24 bytes here (not in the shipped per-tile kernel), so the form would run 128.
        config = dict(config, BLOCK_N=128, NUM_STAGES=5)
    compiled = compile_kernel.compile_one(rule, f, config, 90)
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    assert int(compiled.metadata.shared) <= SM90_MAX_SHARED
    assert "QGMMA" in cuobjdump(["-sass"], compiled.asm["cubin"])
