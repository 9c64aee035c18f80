"""Kernel.fallbacks / Kernel.rare: what the release profile leaves out is still
served, by a functional that computes the same result, at no run-time cost."""
import types

import pytest

from python import build_plan, codegen_cpp, rules
from python.kernel_rules import Arg, Kernel, Profile, TuningSpace

FLASH = [r for r in rules.KERNELS if r.name in ("attn_fwd", "bwd_preprocess", "bwd_dkdv", "bwd_dq")]


@pytest.mark.parametrize("rule", FLASH, ids=lambda r: r.name)
def test_release_serves_every_valid_flash_functional(rule):
    plan = build_plan.make_plan(rules, "release", [80, 90])
    k = next(k for k in plan["kernels"] if k["name"] == rule.name)
    entries = k["entries"]
    built = served = 0
    for e in entries:
        f = e["functional"]
        if e["variants"]:
            built += 1
            continue
        # Unaligned data with an exact head is never compiled, yet a call can
        # reach it: a padded unaligned kernel must serve it (unless the
        # functional is invalid for another reason, e.g. a feature combination).
        if not e["valid"] and not f["ALIGNED16"] and rule.valid(dict(f, PADDED_HEAD=True), 90):
            assert e["served_by"] is not None, f"unaligned {e['name']} has no kernel"
        if not e["valid"]:
            continue
        assert e["served_by"] is not None, f"{e['name']}: valid, not built and not served"
        served += 1
        g = entries[e["served_by"]]["functional"]
        # Only generalisations: a padded head (any head_dim <= the bucket is
        # exact), a bucket at least as large, unaligned if the call may be.
        assert g["PADDED_HEAD"] and g["BLOCK_DMODEL"] >= f["BLOCK_DMODEL"]
        assert f["ALIGNED16"] or not g["ALIGNED16"]
        same = {n: v for n, v in f.items() if n not in ("BLOCK_DMODEL", "PADDED_HEAD", "ALIGNED16")}
        assert all(g[n] == v for n, v in same.items()), (e["name"], entries[e["served_by"]]["name"])
        assert {v["arch"] for v in entries[e["served_by"]]["variants"]} == {80, 90}
    assert built and served, "release must both build and serve some functionals"


def test_release_compiles_less_than_tune_covers():
    rel = build_plan.make_plan(rules, "release", [90])
    gputest = build_plan.make_plan(rules, "gputest", [90])

    def images(plan):
        return sum(len(e["variants"]) for k in plan["kernels"] for e in k["entries"])

    # 928 when the fallbacks landed; since then the attention features (+180),
    # KV-cache decode (+54), MoE quant modes, routing and backward kernels;
    # 1378 on 2026-12-02, then the Hopper forward at head dims 96/192/256 (+18)
    # and the sm_90 MoE Gluon GEMM (+4): 1400. Release for sm_90 measured 1611 s
    # on 2 cores at 1400 (docs/build-time.md). The sm_90 backward (+32: 24 Gluon
    # dK/dV images at ~2 s each, 4 dQ conversions, 4 preprocess-with-zeroing):
    # 1432. Split-K for the decode GEMM2 (+10: the SPLIT_K 4 functionals of
    # fused_moe_gemm (fp8) and fused_moe_gemm_wq, 16-row blocks with the routed weight): 1442; the
    # PAGE_TILES decode functionals (one default config each): 1460; the fp8 Gluon
    # MoE GEMM (+12: 2 output dtypes x 3 scale modes x routed weight): 1472; the one-program
    # dynamic fp8 quantization for decode (+3: x dtypes): 1475; the persistent sm_90 Gluon
    # MoE GEMM (+4: 2 dtypes x routed weight): 1479; the activation fused with the
    # fp8 group quantization of GEMM2's input (+8: 2 dtypes x 4 activations): 1487; the
    # one-program dynamic quantization with the activation (+4: 2 dtypes x silu, gelu_tanh): 1491;
    # that quantization as two chunked kernels (+7: one more kernel, 7 functionals): 1498; the sm_90
    # int4 decode GEMM (+12: 2 dtypes x 2 K tiles x 3 split/routed-weight forms): 1510; the decode
    # kernels stepping whole pages of 16 or 32 (+18: PAGE_TILES 2, as PAGE_TILES 1 above): 1528; the
    # int4 GEMM without zero points (+12: HAS_ZP, symmetric checkpoints): 1540; its activations in
    # the dot order (+44: X_DOT_ORDER +24, the copy +4, act_and_mul_dot_order +16): 1584; causal head
    # dim 64 on the sm_90 forward (+4: 2 dtypes x 2 causal kinds): 1588; the sm_90 varlen forward
    # (+6: 2 dtypes x 3 causal kinds at head dim 64): 1594.
    assert images(rel) <= 1594, "the release profile grew: see docs/build-time.md"
    assert images(gputest) > 0


def _toy(rare, fallbacks, grid=("cdiv(n, BLOCK)", "1", "1")):
    k = Kernel(
        name="toy", source="tritonsrc/moe/activation.py", function="toy",
        args=[Arg("x", "*{dtype}:16"), Arg("n", "i32")],
        functional={"dtype": ["fp16", "fp32"], "WIDE": [False, True]},
        tuning=TuningSpace(params={"BLOCK": [64], "num_warps": [4], "num_stages": [1]},
                           default=lambda f, a: {"BLOCK": 64, "num_warps": 4, "num_stages": 1}),
        grid=grid, fallbacks=fallbacks, rare=rare)
    profiles = {"release": Profile("release", "", skip_rare=True), "tune": Profile("tune", "")}
    return types.SimpleNamespace(KERNELS=[k], PROFILES=profiles), k


def test_rare_functional_runs_its_fallback_and_codegen_points_there():
    mod, k = _toy(rare=lambda f: not f["WIDE"], fallbacks=lambda f: [dict(f, WIDE=True)])
    plan = build_plan.make_plan(mod, "release", [90])
    entries = plan["kernels"][0]["entries"]
    names = [e["name"] for e in entries]
    narrow = names.index("dtype-fp16__WIDE-0")
    wide = names.index("dtype-fp16__WIDE-1")
    assert not entries[narrow]["variants"] and entries[narrow]["served_by"] == wide
    assert entries[wide]["variants"] and entries[wide]["served_by"] is None
    cc = codegen_cpp.source(k, plan["kernels"][0], "release")
    assert f"{{&kSlot_f{wide}, kTuningTables_f{wide}}},  // dtype-fp16__WIDE-0: served by f{wide}" in cc
    assert "nullptr, nullptr" not in cc, "every functional is either built or served"


def test_rare_functional_without_a_built_fallback_is_refused():
    mod, _ = _toy(rare=lambda f: f["dtype"] == "fp32", fallbacks=lambda f: [])
    with pytest.raises(ValueError, match="no built fallback serves it"):
        build_plan.make_plan(mod, "release", [90])
    build_plan.make_plan(mod, "tune", [90])  # a profile that builds everything needs none


def test_fallback_may_not_change_what_the_grid_uses():
    mod, _ = _toy(rare=lambda f: not f["WIDE"], fallbacks=lambda f: [dict(f, WIDE=True)],
                  grid=("cdiv(n, BLOCK) * WIDE", "1", "1"))
    with pytest.raises(ValueError, match="which the grid uses"):
        build_plan.make_plan(mod, "release", [90])
