"""The checked-in tuning databases parse, and every entry names a kernel,
functional, key bins and a config that the rules can generate."""
import json

import pytest

from python import build_plan, rules
from python.kernel_rules import functional_name

DB_FILES = sorted(build_plan.TUNING_DB_DIR.glob("sm_*/*.json"))


def test_sm90_forward_database_is_checked_in():
    assert build_plan.TUNING_DB_DIR / "sm_90" / "attn_fwd.json" in DB_FILES


@pytest.mark.parametrize("path", DB_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_entries_name_generatable_configs(path):
    db = json.loads(path.read_text())
    arch = int(path.parent.name.removeprefix("sm_"))
    by_name = {r.name: r for r in rules.KERNELS}
    assert db["kernel"] == path.stem and db["kernel"] in by_name
    rule = by_name[db["kernel"]]
    assert db["arch"] == arch
    assert db["keys"] == [k.arg for k in rule.autotune_keys]
    functionals = {functional_name(f): f for f in rule.functionals(arch)}
    seen = set()
    for e in db["entries"]:
        assert e["functional"] in functionals, e["functional"]
        f = functionals[e["functional"]]
        assert len(e["bins"]) == len(rule.autotune_keys)
        assert all(0 <= b < len(k.bins) for b, k in zip(e["bins"], rule.autotune_keys))
        space = rule.tuning.all_configs(f, arch) + [dict(rule.tuning.default(f, arch))]
        assert e["config"] in space, (e["functional"], e["config"])
        if "source" in e:  # transcribed from a tuner's printed table, which shows winners only
            assert "time_ms" in e and e["time_ms"] > 0
        elif "tuned_over" in e:  # ranked by the geometric mean over several M (and routings)
            assert e["time_ms"] == e["tuned_over"][0]["time_ms"], "time_ms is the first shape's"
            assert all(t["fastest_ms"] <= t["time_ms"] for t in e["tuned_over"])
            if "score_ms" in e:  # entries since score_ms was recorded
                assert e["score_ms"] <= e["runner_up"]["score_ms"]
        else:
            assert e["time_ms"] <= e["runner_up"]["time_ms"]
        key = (e["functional"], tuple(e["bins"]))
        assert key not in seen, f"duplicate entry {key}"
        seen.add(key)


def test_plan_uses_database_winners():
    plan = build_plan.make_plan(rules, "release", [90])
    assert not plan["notes"], plan["notes"]
    for path in (p for p in DB_FILES if p.parent.name == "sm_90"):
        db = json.loads(path.read_text())
        pk = next(k for k in plan["kernels"] if k["name"] == db["kernel"])
        rule = next(r for r in rules.KERNELS if r.name == db["kernel"])
        shape = [len(k.bins) for k in rule.autotune_keys]
        for e in db["entries"]:
            entry = next(x for x in pk["entries"] if x["name"] == e["functional"])
            if not entry["variants"]:
                continue
            v = next(v for v in entry["variants"] if v["arch"] == 90)
            idx = 0
            for b, n in zip(e["bins"], shape):
                idx = idx * n + b
            chosen = v["configs"][v["lut"][idx]]["values"]
            assert chosen == e["config"]
