"""`pip wheel .` (scikit-build-core) with the ci profile for sm_90, reusing
the main build's Triton cache, installed into a fresh venv: `import aotriton`
works with no path set-up, the package and the extension come from the
wheel, its images are found inside the package, and build_info() says what
was built. The venv sees the test interpreter's packages (torch, triton)
through a .pth file placed after its own site-packages, so torch need not be
installed again while the aotriton under test can only come from the wheel."""
import json
import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from pkg_helpers import lzma_args, run, triton_cache
from testenv import REPO

pytestmark = pytest.mark.packaging
PROFILE = os.environ.get("AOTRITON_PACKAGING_PROFILE", "ci")

CHECK = r"""
import json, os, sys
import aotriton, pyaotriton, torch
info = aotriton.build_info()
try:
    aotriton.silu_and_mul(torch.ones(4, 16, dtype=torch.float16))
    error = None
except (ValueError, RuntimeError) as e:
    error = str(e)
print(json.dumps({"aotriton": aotriton.__file__, "pyaotriton": pyaotriton.__file__,
                  "version": aotriton.__version__, "info": info, "cpu_error": error}))
"""


def make_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--without-pip", path])
    py = path / "bin" / "python"
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # After the venv's own site-packages: the wheel's files win over anything seen through it.
    (Path(site) / "zz_test_interpreter.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


@pytest.fixture(scope="module")
def wheel(build_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "AOTRITON_PROFILE": PROFILE, "AOTRITON_TARGET_ARCH": "90",
           "AOTRITON_TRITON_CACHE_DIR": triton_cache(build_dir)}
    t0 = time.time()
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", work / "dist",
         "-C", f"build-dir={work / 'build'}",
         *[f"-Ccmake.define.{a[2:]}" for a in lzma_args()], REPO], env=env, cwd=work)
    print(f"wheel build: {time.time() - t0:.0f} s")
    (whl,) = (work / "dist").glob("aotriton-0.1.0-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "aotriton/__init__.py" in names and "aotriton/_build_info.py" in names
    assert any(n.startswith("pyaotriton") and n.endswith(".so") for n in names)
    assert any(n.startswith("aotriton/images/sm_90/") and n.endswith(".aks") for n in names)
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert not any(n.endswith((".a", ".h")) for n in names)  # the C++ SDK ships in the tarball


def test_import_in_fresh_venv(wheel, tmp_path):
    py = make_venv(tmp_path / "venv")
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AOTRITON_IMAGE_DIR")}
    r = run([py, "-c", CHECK], env=env, cwd=tmp_path)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    venv = str(tmp_path / "venv")
    assert out["aotriton"].startswith(venv) and out["pyaotriton"].startswith(venv)
    assert out["version"] == "0.1.0"
    info = out["info"]
    assert info["version"] == "0.1.0" and info["profile"] == PROFILE and info["archs"] == [90]
    assert info["abi_version"] == 1 and info["image_format_version"] >= 1
    import triton
    assert info["triton_version"] == triton.__version__
    images = Path(info["image_dir"])
    assert str(images).startswith(venv) and images == Path(out["aotriton"]).parent / "images"
    assert list((images / "sm_90").rglob("*.aks"))
    assert out["cpu_error"] and "cuda" in out["cpu_error"].lower()  # a clear error, not a crash
    # Built with torch present (--no-build-isolation): the torch C++ fast path is in the
    # wheel, at the root of site-packages beside pyaotriton, and loads under that torch.
    assert info["torch_extension"].startswith("loaded"), info["torch_extension"]
    assert any(n.startswith("_aotriton_torch") and n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
