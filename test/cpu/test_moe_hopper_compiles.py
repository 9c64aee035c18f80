"""The sm_90 MoE grouped GEMM (rules_moe_hopper.py, tritonsrc/moe/grouped_gemm_hopper.py)
compiles ahead of time without a GPU through the build's own compile path:
no spills, warp specialization with register reallocation, shared memory
within the limit, the weights by 2-D TMA, the generated launcher passing
exactly the kernel's parameters; it is planned for sm_90 only; its tuning
entries are in its space and name their measurement. The GPU side:
test/gpu/test_moe_hopper_gpu.py."""
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from python import build_plan, codegen_cpp, compile_kernel, rules  # noqa: E402
from python.cubin_resources import cuobjdump, resources  # noqa: E402
from python.kernel_rules import config_name, functional_name  # noqa: E402
from python.rules_moe_hopper import fused_moe_gemm_hopper as RULE  # noqa: E402
from test_flash_hopper_compiles import SM90_MAX_SHARED, _expected_params, _ptx_params  # noqa: E402

FUNCTIONALS = [{"dtype": d, "MUL_ROUTED_WEIGHT": w} for d in ("fp16", "bf16") for w in (False, True)]


def _shipped_configs():
    """(functional, config) of every config a non-tune build compiles: the
    default plus the tuning database's."""
    db = build_plan.load_tuning_db(RULE.name, 90)
    out = []
    for f in FUNCTIONALS:
        cfgs = {config_name(RULE.tuning.default(f, 90)): RULE.tuning.default(f, 90)}
        cfgs.update({config_name(e["config"]): e["config"] for e in db if e["functional"] == functional_name(f)})
        out += [(f, c) for c in cfgs.values()]
    return out


def compile_gluon_moe_gemm(rule, functional, config):
    """(compiled, SASS) of one sm_90 Gluon MoE GEMM config, with what every form of it
    must show: no spills, shared memory within the part, the generated launcher's
    parameters, the weights by 2-D TMA and the gathered token rows by cp.async."""
    compiled = compile_kernel.compile_one(rule, functional, config, 90)  # also checks the TMA metadata
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    assert int(compiled.metadata.shared) <= SM90_MAX_SHARED
    assert _ptx_params(compiled.asm["ptx"]) == _expected_params(rule)
    ptx = compiled.asm["ptx"]
    assert "cp.async.bulk.tensor.2d" in ptx, "the weights move by 2-D TMA"
    assert "cp.async.cg.shared.global" in ptx, "the token rows are gathered by cp.async"
    return compiled, cuobjdump(["-sass"], compiled.asm["cubin"])


@pytest.mark.parametrize("functional,config", _shipped_configs(), ids=lambda x: str(x))
def test_compiles_without_spills_and_params_match_the_launcher(functional, config):
    compiled, sass = compile_gluon_moe_gemm(RULE, functional, config)
    assert int(compiled.metadata.global_scratch_size) == 0, "a host descriptor needs no device scratch"
    assert "wgmma.mma_async" in compiled.asm["ptx"]
    # The consumers get 224 registers, the loaders give theirs back.
    assert re.search(r"USETMAXREG\.TRY_ALLOC\S* \S+ 0xe0", sass), "consumer warpgroups raise to 224 registers"
    assert "USETMAXREG.DEALLOC" in sass


def test_planned_for_sm90_only_and_ci_builds_fp16():
    plan = build_plan.make_plan(rules, "ci", [80, 90])
    entries = next(k for k in plan["kernels"] if k["name"] == RULE.name)["entries"]
    archs = {(e["functional"]["dtype"], v["arch"]) for e in entries for v in e["variants"]}
    assert archs == {("fp16", 90)}, archs
    assert all(not e["variants"] for e in next(
        k for k in build_plan.make_plan(rules, "release", [80])["kernels"] if k["name"] == RULE.name)["entries"])
    gputest = next(k for k in build_plan.make_plan(rules, "gputest", [90])["kernels"] if k["name"] == RULE.name)
    assert sum(len(e["variants"]) for e in gputest["entries"]) == 4


def test_generated_launcher_encodes_the_weight_descriptor():
    src = codegen_cpp.source(RULE, {"entries": []}, "ci")
    assert "encode_tma(*t.cu, args.b_desc, f.dtype, 2, boxes[0]" in src
    assert "TmaTensor b_desc;" in codegen_cpp.header(RULE)


def test_generated_tables_carry_the_routing_constants():
    from python import shared_constants, rules_moe_hopper

    text = shared_constants.header()
    assert f"kMoeHopperBlockSizeM = {rules_moe_hopper.BLOCK_M};" in text
    assert f"kMoeHopperMinTokensPerExpert = {rules_moe_hopper.MIN_TOKENS_PER_EXPERT};" in text
    assert f"kMoeHopperMinN = {rules_moe_hopper.MIN_N};" in text


def test_tuning_entries_are_in_the_space_and_name_their_measurement():
    path = REPO / "tuning" / "sm_90" / f"{RULE.name}.json"
    db = json.loads(path.read_text())
    assert db["keys"] == [k.arg for k in RULE.autotune_keys]
    assert db["entries"], "transcribed from the experiment"
    for e in db["entries"]:
        f = next(f for f in FUNCTIONALS if functional_name(f) == e["functional"])
        assert e["config"] in RULE.tuning.all_configs(f, 90), e["config"]
        assert all(0 <= b < len(k.bins) for b, k in zip(e["bins"], RULE.autotune_keys))
        src_file, row = e["source"].split(", row ", 1)
        rows = json.loads((REPO / src_file).read_text())["rows"]
        fields = dict(kv.split("=") for kv in row.split(":")[0].split())
        match = [r for r in rows if all(str(r[k]) == v for k, v in fields.items())]
        assert len(match) == 1, (row, len(match))
        assert match[0]["ms"] == e["time_ms"] and match[0]["ok"]
