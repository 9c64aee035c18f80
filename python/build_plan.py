"""What a build compiles: rules x profile x archs (+ tuning database) -> plan.

The plan is a JSON-able dict written to manifest.json; build.ninja and the
generated C++ are both derived from it, so they always agree.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from python.kernel_rules import Kernel, Profile, config_name, functional_name

REPO = Path(__file__).resolve().parent.parent
TUNING_DB_DIR = REPO / "tuning"


def file_safe(name: str) -> str:
    return name.replace("=", "-").replace(",", "__")


def load_tuning_db(kernel: str, arch: int, db_dir: Path = TUNING_DB_DIR) -> list[dict]:
    """Entries of tuning/sm_<arch>/<kernel>.json (empty when untuned)."""
    path = db_dir / f"sm_{arch}" / f"{kernel}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return data.get("entries", [])


def lut_shape(rule: Kernel) -> list[int]:
    return [len(k.bins) for k in rule.autotune_keys]


def _plan_variant(rule: Kernel, functional: dict, arch: int, profile: Profile, db: list[dict], notes: list[str]):
    """Configs to compile for one (functional, arch) and the LUT over them."""
    default = dict(rule.tuning.default(functional, arch))
    space = rule.tuning.all_configs(functional, arch)
    if profile.tuning == "all":
        configs = space if default in space else [default] + space
    else:
        configs = [default]
    shape = lut_shape(rule)
    lut_size = 1
    for n in shape:
        lut_size *= n
    lut = [default] * lut_size
    fname = functional_name(functional)
    for entry in db:
        if entry.get("functional") != fname:
            continue
        cfg = entry["config"]
        if cfg not in space and cfg != default:
            notes.append(f"{rule.name} sm_{arch} {fname}: database config {config_name(cfg)} is not in the "
                         f"tuning space; ignored")
            continue
        idx = 0
        for b, n in zip(entry["bins"], shape):
            idx = idx * n + b
        lut[idx] = cfg
        if cfg not in configs:
            configs.append(cfg)
    names = sorted({config_name(c) for c in configs})
    by_name = {config_name(c): c for c in configs}
    return {
        "arch": arch,
        "configs": [{"name": n, "values": by_name[n], "file": file_safe(n)} for n in names],
        "lut": [names.index(config_name(c)) for c in lut],
    }


def _grid_names(rule: Kernel) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", " ".join(rule.grid)))


def _resolve_fallbacks(rule: Kernel, entries: list[dict], profile: Profile) -> None:
    """entry["served_by"]: index of the built entry that runs a call of an
    entry that is not built itself (or invalid), None when none does. A rare
    functional that the profile skipped must be served, or the release would
    lose it."""
    index = {e["name"]: i for i, e in enumerate(entries)}
    grid = _grid_names(rule)
    for e in entries:
        e["served_by"] = None
        if e["variants"]:
            continue
        for alt in rule.fallbacks(e["functional"]):
            changed = {k for k in alt if alt[k] != e["functional"].get(k)}
            if changed & grid:
                raise ValueError(f"{rule.name}: a fallback of {e['name']} changes {sorted(changed & grid)}, "
                                 f"which the grid uses")
            j = index.get(functional_name(alt))
            if j is None:
                raise ValueError(f"{rule.name}: fallback {alt} of {e['name']} is not in the functional space")
            if entries[j]["variants"]:
                e["served_by"] = j
                break
        if e["served_by"] is None and e["valid"] and profile.skip_rare and rule.rare(e["functional"]) \
                and profile.includes_kernel(rule.name) and profile.keep(rule.name, e["functional"]):
            raise ValueError(f"{rule.name}: rare functional {e['name']} is skipped by profile {profile.name} "
                             f"but no built fallback serves it")


def make_plan(rules_module, profile_name: str, archs: list[int]) -> dict:
    profiles = rules_module.PROFILES
    if profile_name not in profiles:
        raise SystemExit(f"unknown profile {profile_name!r}; choose one of {sorted(profiles)}")
    profile = profiles[profile_name]
    notes: list[str] = []
    kernels = []
    for rule in rules_module.KERNELS:
        fspace = rule.functional_space
        names = list(fspace)
        space = [dict(zip(names, c)) for c in itertools.product(*(fspace[n] for n in names))]
        entries = []
        for f in space:
            valid_archs = [a for a in archs if rule.valid(f, a)]
            other_profiles = sorted(p.name for p in profiles.values() if p.builds(rule, f))
            built = profile.builds(rule, f)
            variants = []
            if built:
                for a in valid_archs:
                    variants.append(_plan_variant(rule, f, a, profile, load_tuning_db(rule.name, a), notes))
            entries.append({
                "functional": f,
                "name": functional_name(f),
                "valid": bool(valid_archs),
                "profiles": other_profiles,
                "variants": variants,
            })
        _resolve_fallbacks(rule, entries, profile)
        kernels.append({
            "name": rule.name,
            "source": rule.source,
            "entries": entries,
        })
    return {"profile": profile_name, "archs": archs, "kernels": kernels, "notes": notes}
