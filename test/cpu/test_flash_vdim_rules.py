"""The V-head-dim kernels (rules_flash.VDIM_PAIRS, BLOCK_DV): which
functionals exist, which each profile compiles, and that the shared-head-dim
kernels keep their functional space (BLOCK_DV = 0 only)."""
import itertools
import re

from python import build_plan, rules, rules_flash, shared_constants

MAIN = ("attn_fwd", "bwd_dkdv", "bwd_dq")
BY_NAME = {r.name: r for r in rules.KERNELS}


def _entries(profile, name, archs=(90,)):
    plan = build_plan.make_plan(rules, profile, list(archs))
    return next(k for k in plan["kernels"] if k["name"] == name)["entries"]


def test_shared_head_dim_kernels_keep_their_space():
    for name in MAIN:
        rule = BY_NAME[name]
        assert rule.functional["BLOCK_DV"] == [0]
        size = 1
        for values in rule.functional_space.values():
            size *= len(values)
        assert size == 4320, name  # the dispatch table did not grow


def test_vdim_kernels_are_valid_for_the_pairs_only():
    want = {(dt, b, p, c, vl, dv) for (b, p), dv in rules_flash.VDIM_PAIRS.items()
            for dt, c, vl in itertools.product(("fp16", "bf16"), (0, 1, 2), (False, True))}
    for name in MAIN:
        rule = BY_NAME[f"{name}_vdim"]
        assert rule.function == BY_NAME[name].function and rule.source == BY_NAME[name].source
        assert rule.args == BY_NAME[name].args
        got = {(f["dtype"], f["BLOCK_DMODEL"], f["PADDED_HEAD"], f["CAUSAL_TYPE"], f["IS_VARLEN"], f["BLOCK_DV"])
               for f in rule.functionals(90)}
        assert got == want, name
        for f in rule.functionals(90):
            assert not f["ENABLE_DROPOUT"] and not f["LOCAL_WINDOW"] and f["SCORE_MOD"] == 0


def test_release_builds_or_serves_every_pair():
    for name in MAIN:
        entries = _entries("release", f"{name}_vdim", (80, 90))
        for e in entries:
            f = e["functional"]
            if not e["valid"]:
                assert not e["variants"] and e["served_by"] is None
                continue
            if f["BLOCK_DMODEL"] == 256 and not f["PADDED_HEAD"]:  # q/k 256 runs the padded 256 kernel
                g = entries[e["served_by"]]["functional"]
                assert not e["variants"] and g == dict(f, PADDED_HEAD=True), e["name"]
            else:
                assert {v["arch"] for v in e["variants"]} == {80, 90}, e["name"]


def test_ci_compiles_one_functional_per_kernel_gputest_all():
    for name in MAIN:
        built = [e["functional"] for e in _entries("ci", f"{name}_vdim") if e["variants"]]
        assert built == [dict(built[0], dtype="fp16", BLOCK_DMODEL=128, PADDED_HEAD=False, CAUSAL_TYPE=2,
                              IS_VARLEN=False, BLOCK_DV=64)], name
        gputest = _entries("gputest", f"{name}_vdim")
        assert all(bool(e["variants"]) == e["valid"] for e in gputest), name


def test_cpp_table_of_pairs_comes_from_the_rules():
    h = shared_constants.header()
    rows = [[int(x) for x in re.search(rf"{n}\[\] = \{{([^}}]*)\}}", h).group(1).split(",")]
            for n in ("kVdimQkMin", "kVdimQkMax", "kVdimV")]
    assert list(zip(*rows)) == [(128, 128, 64), (129, 256, 128)]
    assert shared_constants.vdim_rows() == list(zip(*rows))
