"""python/tune_shared.py, the tuners' common part, without a GPU: a launch
survives the trip to a spawned compile worker (tensors as dtypes), a worker
that dies does not stop the tuning, candidates are checked before they are
timed, and an entry replaces only its own key."""
import json
import math

import pytest

torch = pytest.importorskip("torch")

from python import tune_shared as T  # noqa: E402


class _FakeKernel:
    """Stands in for a Triton kernel in the worker: warmup accepts fp16 first
    arguments only, so the test sees which dtype arrived."""

    def warmup(self, x, n, grid, BLOCK):
        if x is not torch.float16 or n != 7 or grid != (3, 1, 1) or BLOCK != 64:
            raise ValueError(f"got {x}, {n}, {grid}, BLOCK={BLOCK}\nsecond line")


FAKE = _FakeKernel()


def test_bin_of_matches_the_launchers_bins():
    bins = [16, 64, 256]
    assert [T.bin_of(v, bins) for v in (1, 16, 17, 64, 65, 256, 10 ** 9)] == [0, 0, 1, 1, 2, 2, 2]


def test_compile_workers_get_dtypes_and_report_errors(capsys):
    me = f"{__name__}:FAKE"
    good = T.compile_job(me, (3, 1, 1), [torch.ones(2, dtype=torch.float16), 7], {"BLOCK": 64})
    bad = T.compile_job(me, (3, 1, 1), [torch.ones(2, dtype=torch.bfloat16), 7], {"BLOCK": 64})
    assert good[2][0] == "dtype:float16"  # no tensor data goes to the worker
    gone = (f"{__name__}:NO_SUCH_KERNEL", (1, 1, 1), [], {})
    with T.compile_pool(2) as pool:
        errors = T.compile_all(pool, [good, bad, gone])
    assert errors[0] is None
    assert errors[1] == "ValueError: got torch.bfloat16, 7, (3, 1, 1), BLOCK=64"
    assert errors[2] is None  # the worker died: the main process compiles it at launch
    out = capsys.readouterr().out
    assert out.count("compile worker failed") == 1 and "(AttributeError)" in out, out


def test_measure_checks_before_timing():
    timed = []

    def error(cfg):
        if cfg["n"] == 3:
            raise RuntimeError("out of resources")
        return {1: 1e-4, 2: 1e-4, 4: 0.5, 5: float("nan")}[cfg["n"]]

    def bench(cfg):
        timed.append(cfg["n"])
        return {1: 2.0, 2: 1.0}[cfg["n"]]

    cands = [{"n": n} for n in range(6)]
    errs = ["ValueError: too big", None, None, None, None, None]
    results = T.measure(cands, errs, error, 1e-2, bench)
    assert timed == [1, 2]  # only the correct ones are timed
    assert [(r[0], r[1]["n"]) for r in results[:2]] == [(1.0, 2), (2.0, 1)]
    verdicts = {r[1]["n"]: r[2] for r in results}
    assert verdicts[0] == "compile: ValueError: too big" and verdicts[3] == "failed: RuntimeError"
    assert verdicts[4] == "wrong: rel err 5.00e-01" and verdicts[5] == "wrong: rel err nan"
    best, second, default_ms = T.best_second_default(results, {"n": 1})
    assert (best[1], second[1], default_ms) == ({"n": 2}, {"n": 1}, 2.0)
    only = T.measure(cands[1:2], [None], error, 1e-2, bench)
    best, second, default_ms = T.best_second_default(only, {"n": 9})
    assert second is best and math.isnan(default_ms) and T.finite_ms(default_ms) is None


def test_store_entry_replaces_its_key_and_copies_to_out(tmp_path, monkeypatch):
    db_file = tmp_path / "db" / "k.json"
    db_file.parent.mkdir()
    db = {"entries": [{"functional": "f", "bins": [0], "config": "old"}, {"functional": "f", "bins": [1], "config": "x"}]}
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    T.store_entry(db, {"functional": "f", "bins": [0], "config": "new"}, lambda: db_file.write_text(json.dumps(db)),
                  db_file, 90)
    assert sorted((e["bins"], e["config"]) for e in db["entries"]) == [([0], "new"), ([1], "x")]
    assert json.loads((tmp_path / "out" / "tuning" / "sm_90" / "k.json").read_text()) == db
