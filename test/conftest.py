"""Shared test setup: the installed package's path and the build/install fixtures.
The repo root (python/ and tritonsrc/ are packages there) and test/ are on the
path through pyproject.toml's [tool.pytest.ini_options] pythonpath."""
import sys

import pytest

from testenv import BUILD_DIR, PREFIX, PY_DIR

# The aotriton package and the pyaotriton extension as installed (AOTRITON_PREFIX).
if str(PY_DIR) not in sys.path:
    sys.path.insert(0, str(PY_DIR))


def pytest_configure(config):
    config.addinivalue_line("markers", "packaging: builds release artifacts (tarball, wheel, CMake consumers); slow")
    config.addinivalue_line("markers", "big_memory: needs tens of GB of GPU memory (tools/gpu_test_sharded.sh runs "
                                       "these alone, after the shards)")


@pytest.fixture(scope="session")
def build_dir():
    if not (BUILD_DIR / "kernels" / "manifest.json").exists():
        pytest.fail(f"no aotriton build at {BUILD_DIR}: run tools/build.sh first (or set AOTRITON_BUILD_DIR)")
    return BUILD_DIR


@pytest.fixture(scope="session")
def prefix():
    if not (PREFIX / "lib" / "libaotriton.a").exists():
        pytest.fail(f"no aotriton install at {PREFIX}: run tools/build.sh first (or set AOTRITON_PREFIX)")
    return PREFIX
