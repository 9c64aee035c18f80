"""python/tune.py (the flash tuners): one database entry per (functional, seqlen bins), tuned over
every seqlen of the list that falls in the bin. Run on fake cases and clocks (no GPU)."""
import argparse

import pytest

from python import tune


def _tune_last_bin(monkeypatch, case_class, kernel_ms):
    """tune.tune on attn_fwd_hopper bf16 head dim 128 non-causal at 8192 and 16384 (the last bin) with
    fake cases and clocks and an empty in-memory database; returns the one entry it stores."""
    monkeypatch.setattr(tune, "FlashCase", case_class)
    monkeypatch.setattr(tune, "kernel_ms", kernel_ms)
    saved = {}
    monkeypatch.setattr(tune, "load_db", lambda k, arch, rule: {"entries": []})
    monkeypatch.setattr(tune, "save_db", lambda db, k, arch: saved.update({k: db}))
    tune.tune(argparse.Namespace(kernels="attn_fwd_hopper", dtypes="bf16", head_dims="128", causal="0",
                                 seqlens="8192,16384", fuse_dq="1", retune=False))
    (entry,) = saved["attn_fwd_hopper"]["entries"]
    return entry


def test_flash_groups_put_every_seqlen_of_a_bin_in_one_entry():
    """8192 and 16384 share the last seqlen bin; 512, 2048 have their own. Bins the database has and
    functionals the rule does not build (sm_80 for the Hopper kernel) get no group."""
    from python import rules
    rule = next(r for r in rules.KERNELS if r.name == "attn_fwd_hopper")
    work = [("attn_fwd_hopper", rule, "bf16", 128, causal, None, S) for causal in (0, 2)
            for S in (512, 2048, 8192, 16384)]
    groups = tune.flash_groups(work, 90, done=set())
    assert sorted((k[2], v[4], v[-1]) for k, v in groups.items()) == [
        ((1, 1), 0, [512]), ((1, 1), 2, [512]), ((3, 3), 0, [2048]), ((3, 3), 2, [2048]),
        ((5, 5), 0, [8192, 16384]), ((5, 5), 2, [8192, 16384])]
    done = {next(k for k in groups if k[2] == (5, 5) and "CAUSAL_TYPE-0" in k[1])}
    assert len(tune.flash_groups(work, 90, done)) == 5
    assert tune.flash_groups(work, 80, set()) == {}


def test_flash_groups_take_the_varlen_forward_with_its_functional():
    """attn_fwd_hopper_varlen shares attn_fwd_hopper's functional keys (a name without IS_VARLEN or
    PADDED_HEAD) and bins max_seqlen_q/k like the batched kernel's seqlen_q/k."""
    from python import rules
    from python.kernel_rules import functional_name
    rule = next(r for r in rules.KERNELS if r.name == "attn_fwd_hopper_varlen")
    work = [("attn_fwd_hopper_varlen", rule, "bf16", 64, 2, None, S) for S in (2048, 8192, 16384)]
    groups = tune.flash_groups(work, 90, done=set())
    name = functional_name({"dtype": "bf16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": 2})
    assert sorted((k[1], k[2], v[-1]) for k, v in groups.items()) == [
        (name, (3, 3), [2048]), (name, (5, 5), [8192, 16384])]


def test_flash_tuner_picks_over_every_seqlen_of_the_bin(monkeypatch):
    """The ping-pong loses 8192 by 20% and wins 16384 by 2.5%: the entry is the serial default (the
    best geometric mean), with both seqlens' times recorded. Before, each seqlen was tuned alone and
    16384's pick (the ping-pong) replaced 8192's."""
    torch = pytest.importorskip("torch")
    from python import rules
    rule = next(r for r in rules.KERNELS if r.name == "attn_fwd_hopper")
    f = tune.hopper_functional("bf16", 128, 0)
    serial, pingpong = [dict(c) for c in rule.tuning.all_configs(f, 90)
                        if (c["SCHEDULE"], c["BLOCK_N"], c["NUM_STAGES"], c["RESCALE_TH"]) in ((0, 128, 3, 0),
                                                                                               (3, 128, 3, 0))
                        and c["maxnreg"] == 0]
    assert serial["SCHEDULE"] == 0 and pingpong["SCHEDULE"] == 3
    monkeypatch.setattr(rule.tuning, "all_configs", lambda f, arch: [serial, pingpong])
    monkeypatch.setattr(rule.tuning, "default", lambda f, arch: serial)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    last = []

    class FakeCase:
        def __init__(self, dtype, D, causal, S):
            self.S, self.out = S, torch.randn(4, 8)

        def ref_fwd(self):
            return self.out

        def run_fwd_hopper(self, cfg):
            last[:] = [(self.S, cfg["SCHEDULE"])]
            return self.out

    times = {(8192, 0): 1.00, (8192, 3): 1.20, (16384, 0): 4.1, (16384, 3): 4.0}

    def fake_ms(fn):
        fn()
        return times[last[0]]

    entry = _tune_last_bin(monkeypatch, FakeCase, fake_ms)
    assert entry["config"]["SCHEDULE"] == 0 and entry["bins"] == [5, 5]
    assert [(t["seqlen"], t["time_ms"], t["fastest_ms"]) for t in entry["tuned_over"]] == [(8192, 1.0, 1.0),
                                                                                          (16384, 4.1, 4.0)]
    assert entry["runner_up"]["config"]["SCHEDULE"] == 3 and entry["runner_up"]["time_ms"] == 1.2
    assert entry["time_ms"] == 1.0 and entry["default_ms"] == 1.0 and entry["shape"]["seqlen"] == 8192


def test_case_runner_gives_each_kernel_its_reference(monkeypatch):
    """The forward kernels are checked against SDPA's output, the backward ones against their
    default config's run (with the other backward kernel at its build config), at 2e-2 / 1e-2."""
    from tritonsrc.flash import bwd_configs

    calls = []

    class FakeCase:
        D, dtype = 64, "bf16"

        def ref_fwd(self):
            return "sdpa"

        def run_fwd(self, cfg):
            return ("triton", cfg)

        def run_fwd_hopper(self, cfg):
            return ("gluon", cfg)

        def run_fwd_hopper_varlen(self, cfg):
            return ("gluon varlen", cfg)

        def run_bwd(self, kernel, cfg, other):
            calls.append((kernel, cfg, other))
            return (kernel, cfg)

        def run_bwd_hopper(self, cfg, fuse):
            return ("bwd_hopper", cfg, fuse)

    monkeypatch.setattr(bwd_configs, "pick_config", lambda arch, D, dtype, k: (arch, D, dtype, k))
    case = FakeCase()
    ref, run, tol = tune.case_runner("attn_fwd_hopper", case, "dflt", None, 90)
    assert (ref, run("c"), tol) == ("sdpa", ("gluon", "c"), 2e-2)
    ref, run, tol = tune.case_runner("attn_fwd_hopper_varlen", case, "dflt", None, 90)
    assert (ref, run("c"), tol) == ("sdpa", ("gluon varlen", "c"), 2e-2)
    ref, run, tol = tune.case_runner("attn_fwd", case, "dflt", None, 90)
    assert (ref, run("c"), tol) == ("sdpa", ("triton", "c"), 2e-2)
    ref, run, tol = tune.case_runner("bwd_dkdv_hopper", case, "dflt", 1, 90)
    assert (ref, run("c"), tol) == (("bwd_hopper", "dflt", 1), ("bwd_hopper", "c", 1), 1e-2)
    ref, run, tol = tune.case_runner("bwd_dq", case, "dflt", None, 90)
    assert (ref, run("c"), tol) == (("bwd_dq", "dflt"), ("bwd_dq", "c"), 1e-2)
    assert calls[0][2] == {"dkdv": (90, 64, "bf16", "dkdv"), "dq": (90, 64, "bf16", "dq")}


def test_flash_tuner_entry_without_the_default_in_the_space(monkeypatch):
    """A rule default outside its pruned space is not timed: the entry says so (default_ms None)
    instead of the tuner failing after the measurements."""
    torch = pytest.importorskip("torch")
    from python import rules
    rule = next(r for r in rules.KERNELS if r.name == "attn_fwd_hopper")
    f = tune.hopper_functional("bf16", 128, 0)
    space = [dict(c) for c in rule.tuning.all_configs(f, 90)][:2]
    monkeypatch.setattr(rule.tuning, "all_configs", lambda f, arch: space)
    monkeypatch.setattr(rule.tuning, "default", lambda f, arch: {"not": "in the space"})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    class FakeCase:
        def __init__(self, dtype, D, causal, S):
            self.out = torch.ones(2, 2)

        def ref_fwd(self):
            return self.out

        def run_fwd_hopper(self, cfg):
            return self.out

    def one_ms(fn):
        fn()
        return 1.0

    entry = _tune_last_bin(monkeypatch, FakeCase, one_ms)
    assert entry["default_ms"] is None and all(t["default_ms"] is None for t in entry["tuned_over"])
    assert entry["config"] in space
