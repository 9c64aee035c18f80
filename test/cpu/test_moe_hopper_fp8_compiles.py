"""The sm_90 fp8 MoE grouped GEMM (rules_moe_hopper_fp8.py,
tritonsrc/moe/grouped_gemm_hopper_fp8.py) compiles ahead of time without a GPU:
no spills with the product and the accumulator both in registers, shared memory
within the limit, weights by 2-D TMA, fp8 wgmma, the launcher's parameters; and
each consumer adds every K tile's product into fp32 after waiting for its own
wgmma only (no CTA-wide barrier in the loop). Numerics on the GPU:
test/gpu/test_moe_hopper_fp8_gpu.py."""
import re

import pytest

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8 as RULE  # noqa: E402
from test_moe_hopper_compiles import compile_gluon_moe_gemm  # noqa: E402

FUNCTIONALS = [{"dtype": "bf16", "QUANT": q, "MUL_ROUTED_WEIGHT": w} for q in (1, 2, 3) for w in (False, True)] + [
    {"dtype": "fp16", "QUANT": 2, "MUL_ROUTED_WEIGHT": True}]


def _innermost_loops(sass, marker):
    """The SASS of each innermost loop (a backward branch to its target) holding `marker`."""
    lines = sass.splitlines()
    addr = {int(m.group(1), 16): i for i, l in enumerate(lines) if (m := re.search(r"/\*([0-9a-f]{4,})\*/", l))}
    spans = []
    for i, l in enumerate(lines):
        m = re.search(r"/\*([0-9a-f]{4,})\*/.*\bBRA\b.*?(0x[0-9a-f]+)", l)
        if m and int(m.group(2), 16) < int(m.group(1), 16) and int(m.group(2), 16) in addr:
            lo = addr[int(m.group(2), 16)]
            if any(marker in x for x in lines[lo:i + 1]):
                spans.append((lo, i))
    # A wait's retry stub past the code branches back into a loop: its span overlaps a shorter one.
    inner = [s for s in spans if not any(o[1] - o[0] < s[1] - s[0] and o[0] <= s[1] and s[0] <= o[1] for o in spans)]
    return ["\n".join(lines[lo:hi + 1]) for lo, hi in inner]


def _space_corners():
    """Every functional at the default, at the deepest ring of each tile width of its
    space, and at every config its tuning database ships (the build compiles those)."""
    from python import build_plan
    from python.kernel_rules import functional_name

    db = build_plan.load_tuning_db(RULE.name, 90)
    for f in FUNCTIONALS:
        default = RULE.tuning.default(f, 90)
        seen = [default]
        space = RULE.tuning.all_configs(f, 90)
        for n in sorted({c["BLOCK_N"] for c in space}):
            seen.append(max((c for c in space if c["BLOCK_N"] == n), key=lambda c: c["NUM_STAGES"]))
        seen += [e["config"] for e in db if e["functional"] == functional_name(f)]
        for i, c in enumerate(seen):
            if c not in seen[:i]:
                yield f, c


@pytest.mark.parametrize("functional,config", list(_space_corners()), ids=str)
def test_compiles_without_spills_and_overlaps_the_promotion(functional, config):
    block_n = config["BLOCK_N"]
    compiled, sass = compile_gluon_moe_gemm(RULE, functional, config)
    mma_loops = _innermost_loops(sass, "QGMMA.64x128x32.F32.E4M3.E4M3")
    assert len(mma_loops) == 2, "one fp8 wgmma loop per consumer warpgroup"
    for body in mma_loops:
        cta_wide = [l for l in body.splitlines() if "BAR.SYNC" in l and ", 0x80 ;" not in l]
        assert not cta_wide, f"only mbarriers and the warpgroup's own named barrier in the loop: {cta_wide}"
        halves = block_n // 128
        assert body.count("QGMMA") == 4 * halves, "one 128-wide K tile per iteration"
        assert body.count("WARPGROUP.DEPBAR.LE gsb0, 0x0") == halves, "each half's product waited for once"
        adds = body.count("FFMA") if functional["QUANT"] == 2 else body.count("FADD")
        assert adds >= 64 * halves, "each half's 64 x 128 product is promoted into fp32 every iteration"


def test_tuning_space_is_whole_scale_groups_and_fits():
    for f in FUNCTIONALS:
        space = RULE.tuning.all_configs(f, 90)
        assert {c["BLOCK_N"] for c in space} == {128, 256}
        for c in space:
            assert c["BLOCK_K"] == 128
            # A and B rings, fp32 scale rings (128 rows + 2 halves) per stage
            assert c["NUM_STAGES"] * (128 * (128 + c["BLOCK_N"]) + 4 * 130) <= 227 * 1024


def test_planned_for_sm90_only_and_the_route_threshold_is_generated():
    from python import build_plan, rules, rules_moe_hopper_fp8, shared_constants

    plan = build_plan.make_plan(rules, "ci", [80, 90])
    entries = next(k for k in plan["kernels"] if k["name"] == RULE.name)["entries"]
    built = {(e["functional"]["dtype"], e["functional"]["QUANT"], v["arch"]) for e in entries for v in e["variants"]}
    assert built == {("bf16", 1, 90)}, built
    assert (f"kMoeHopperFp8MinTokensPerExpert = {rules_moe_hopper_fp8.MIN_TOKENS_PER_EXPERT};"
            in shared_constants.header())
