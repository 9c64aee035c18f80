"""tools/junit_total.py: the total line tools/test.sh ends with."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "junit_total.py"


def report(tmp_path, name, tests, failures, errors, skipped):
    p = tmp_path / name
    p.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" '
                 f'failures="{failures}" errors="{errors}" skipped="{skipped}"/></testsuites>')
    return str(p)


def total(*paths):
    r = subprocess.run([sys.executable, str(SCRIPT), *paths], capture_output=True, text=True)
    return r.returncode, r.stdout.strip().splitlines()[-1]


def test_sums_runs_and_counts_errors_as_failed(tmp_path):
    a = report(tmp_path, "a.xml", 10, 1, 2, 3)
    b = report(tmp_path, "b.xml", 7, 0, 0, 7)
    assert total(a, b) == (1, "4 passed, 3 failed, 10 skipped")


def test_all_passing_exits_zero(tmp_path):
    a = report(tmp_path, "a.xml", 5, 0, 0, 1)
    b = report(tmp_path, "b.xml", 0, 0, 0, 0)
    assert total(a, b) == (0, "4 passed, 0 failed, 1 skipped")


def test_missing_or_broken_report_is_a_failure(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites><testsuite")
    a = report(tmp_path, "a.xml", 3, 0, 0, 0)
    assert total(a, str(tmp_path / "absent.xml"), str(broken)) == (1, "3 passed, 2 failed, 0 skipped")


def test_real_pytest_report(tmp_path):
    """The attribute names match what this pytest writes."""
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_bad(): assert False\n"
        "@pytest.mark.skip\ndef test_skip(): pass\n"
        "@pytest.fixture\ndef broken(): raise RuntimeError\n"
        "def test_err(broken): pass\n")
    xml = tmp_path / "r.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_sample.py"),
                    f"--junitxml={xml}"], capture_output=True, cwd=tmp_path)
    assert total(str(xml)) == (1, "1 passed, 2 failed, 1 skipped")
