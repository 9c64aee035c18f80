#!/usr/bin/env python3
"""Sum pytest JUnit XML reports into one line: 'N passed, N failed, N skipped'.

Errors count as failed; a missing or unreadable report (pytest died before
writing it) counts as one failure, so a crash can never look like a pass.
Exit status 1 when anything failed.
"""
import sys
import xml.etree.ElementTree as ET


def count(path):
    """(passed, failed, skipped) of one report."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        print(f"junit_total: no readable report {path}", file=sys.stderr)
        return 0, 1, 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    passed = failed = skipped = 0
    for s in suites:
        tests = int(s.get("tests", 0))
        bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skip = int(s.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    return passed, failed, skipped


def main(paths):
    totals = [sum(c) for c in zip(*(count(p) for p in paths))] if paths else [0, 0, 0]
    passed, failed, skipped = totals
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
