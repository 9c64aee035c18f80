"""Rules and generator: declarations agree with the Triton sources, the plan
and build.ninja are what the profile asks for, ninja is incremental, and a
compile failure names its coordinates."""
import json
import os
import subprocess
import sys
import time

import pytest

from python import build_plan, generate, rules
from python.compile_kernel import build_source, load_kernel_function
from python.kernel_rules import Arg, config_name, functional_name

REPO = generate.REPO
ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


@pytest.mark.parametrize("rule", rules.KERNELS, ids=lambda r: r.name)
def test_rule_matches_kernel_signature(rule):
    fn = load_kernel_function(rule)
    arch = 90
    functionals = rule.functionals(arch)
    assert functionals, f"{rule.name} has no valid functional on sm_90"
    for f in functionals[:: max(1, len(functionals) // 8)]:
        cfg = rule.tuning.default(f, arch)
        assert set(cfg) == set(rule.tuning.params), f"default config keys of {rule.name}"
        build_source(rule, fn, f, cfg)  # raises if args / constexprs disagree


@pytest.mark.parametrize("rule", rules.KERNELS, ids=lambda r: r.name)
def test_default_config_survives_pruning(rule):
    for arch in (80, 90):
        for f in rule.functionals(arch):
            cfg = dict(rule.tuning.default(f, arch))
            assert rule.tuning.prune(f, cfg, arch), f"{rule.name} {f} sm_{arch}: default {cfg} is pruned"


def test_profiles_exist_and_nest():
    assert {"ci", "release", "tune"} <= set(rules.PROFILES)
    ci = build_plan.make_plan(rules, "ci", [90])
    rel = build_plan.make_plan(rules, "release", [90])
    tune = build_plan.make_plan(rules, "tune", [90])

    def count(plan):
        return sum(len(v["configs"]) for k in plan["kernels"] for e in k["entries"] for v in e["variants"])

    assert 0 < count(ci) <= count(rel) <= count(tune)
    assert count(tune) > count(rel), "tune must hold more configs than release"


def test_plan_lut_and_missing_reasons():
    plan = build_plan.make_plan(rules, "ci", [80, 90])
    for k in plan["kernels"]:
        rule = next(r for r in rules.KERNELS if r.name == k["name"])
        size = 1
        for key in rule.autotune_keys:
            size *= len(key.bins)
        for e in k["entries"]:
            assert e["name"] == functional_name(e["functional"])
            for v in e["variants"]:
                assert len(v["lut"]) == size
                assert all(0 <= i < len(v["configs"]) for i in v["lut"])
            if not e["variants"] and e["valid"]:
                assert e["profiles"], f"{e['name']} is valid but in no profile"


def test_bad_rules_are_rejected():
    with pytest.raises(ValueError):
        Arg("x", "*fp16:8")
    with pytest.raises(ValueError):
        Arg("n", "i33")
    with pytest.raises(ValueError):
        Arg("x", "fp32:16")


def test_tritonsrc_deps_follow_imports():
    deps = generate.tritonsrc_deps("tritonsrc/moe/activation.py")
    assert deps == ["tritonsrc/moe/activation.py", "tritonsrc/pdl.py"]  # from ..pdl import


def _gen(tmp_path, profile="ci", archs="90"):
    subprocess.run([sys.executable, str(REPO / "python/generate.py"), "ninja", "--build-dir", str(tmp_path),
                    "--profile", profile, "--archs", archs], check=True, env=ENV, capture_output=True)
    return (tmp_path / "build.ninja").read_text()


def test_ninja_file_has_one_edge_per_cubin_and_image(tmp_path):
    text = _gen(tmp_path, archs="80;90")
    plan = json.loads((tmp_path / "manifest.json").read_text())
    cubins = sum(len(v["configs"]) for k in plan["kernels"] for e in k["entries"] for v in e["variants"])
    images = sum(len(e["variants"]) for k in plan["kernels"] for e in k["entries"])
    assert text.count(": compile ") == cubins
    assert text.count(": pack ") == images
    assert text.count(": codegen ") == len(plan["kernels"])
    # Regenerating with the same inputs changes no content, and leaves the
    # generated C++ untouched (so nothing recompiles).
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    gen_mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "gen").rglob("*")}
    time.sleep(0.01)
    _gen(tmp_path, archs="80;90")
    assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert gen_mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "gen").rglob("*")}


def test_editing_one_kernel_rebuilds_only_its_cubins(build_dir):
    kdir = build_dir / "kernels"
    dry = subprocess.run(["ninja", "-C", str(kdir), "-n"], capture_output=True, text=True, env=ENV, check=True)
    assert "no work to do" in dry.stdout, dry.stdout
    src = REPO / "tritonsrc/moe/moe_sum.py"
    os.utime(src)  # as if edited
    dry = subprocess.run(["ninja", "-C", str(kdir), "-n"], capture_output=True, text=True, env=ENV, check=True)
    lines = [l for l in dry.stdout.splitlines() if "TRITON " in l or "PACK " in l]
    assert lines and all("moe_sum" in l for l in lines), dry.stdout
    subprocess.run(["ninja", "-C", str(kdir)], capture_output=True, env=ENV, check=True)


def test_compile_failure_names_kernel_functional_config_arch(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "python/compile_kernel.py"), "--kernel", "act_and_mul",
         "--functional", '{"dtype":"fp16","ACTIVATION":0}',
         "--config", '{"BLOCK":3,"num_warps":4,"num_stages":1}', "--arch", "90",
         "--out", str(tmp_path / "x.cubin")], capture_output=True, text=True, env=ENV)
    assert r.returncode != 0
    for piece in ("act_and_mul", "'dtype': 'fp16'", "BLOCK=3", "sm_90"):
        assert piece in r.stderr, r.stderr


@pytest.mark.parametrize("arch", [80, 90, 100, 120])
def test_compiles_for_each_arch(tmp_path, arch):
    out = tmp_path / "k.cubin"
    subprocess.run(
        [sys.executable, str(REPO / "python/compile_kernel.py"), "--kernel", "moe_sum",
         "--functional", '{"dtype":"bf16"}', "--config", '{"BLOCK":1024,"BLOCK_R":8,"num_warps":4,"num_stages":1}',
         "--arch", str(arch), "--out", str(out)], check=True, env=ENV)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 0 and meta["num_warps"] == 4
    assert meta["name"] == config_name({"BLOCK": 1024, "BLOCK_R": 8, "num_warps": 4, "num_stages": 1})


def test_compile_one_returns_to_the_callers_directory(tmp_path):
    """compile_dir is only where ptxas runs: a caller's temporary directory that goes
    away must not strand the process (later tests spawn processes from it)."""
    from python import compile_kernel
    rule = next(k for k in rules.KERNELS if k.name == "moe_sum")
    f = rule.functionals(90)[0]
    before = os.getcwd()
    compile_kernel.compile_one(rule, f, dict(rule.tuning.default(f, 90)), 90, compile_dir=tmp_path)
    assert os.getcwd() == before
