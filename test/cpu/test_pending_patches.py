"""The GPU-gated changes parked in docs/pending/ (its README) still apply to this tree: an edit that
breaks one must refresh it in the same change, or the next device run would test a patch nobody can
apply. Each patch is listed in the README's table, and each table row names a patch that exists."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PENDING = REPO / "docs" / "pending"
PATCHES = sorted(PENDING.glob("*.patch"))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_patch_applies_to_this_tree(patch):
    res = subprocess.run(["git", "apply", "--check", str(patch)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, f"{patch.name} no longer applies: refresh it (README in docs/pending)\n{res.stderr}"


def test_readme_lists_exactly_the_patches():
    named = set(re.findall(r"^\| `([^`]+\.patch)` \|", (PENDING / "README.md").read_text(), re.M))
    assert named == {p.name for p in PATCHES}
