"""aotriton embedded in another CMake project with add_subdirectory (what
FetchContent does): it configures with PROJECT_SOURCE_DIR paths, leaves its
tests and Python extension out when not top-level, compiles its kernels
(minimal profile, reusing the main build's Triton cache) and links."""
import sys

import pytest

from pkg_helpers import lzma_args, run, triton_cache
from testenv import REPO

pytestmark = pytest.mark.packaging


def test_consumer_embeds_aotriton(build_dir, tmp_path):
    run(["cmake", "-S", REPO / "test/consumer", "-B", tmp_path, "-G", "Ninja", "-DAOTRITON_CONSUMER_MODE=embedded",
         f"-DAOTRITON_SOURCE_DIR={REPO}", "-DAOTRITON_PROFILE=minimal", "-DAOTRITON_TARGET_ARCH=90",
         f"-DAOTRITON_TRITON_CACHE_DIR={triton_cache(build_dir)}", f"-DAOTRITON_PYTHON={sys.executable}",
         *lzma_args()])
    targets = run(["cmake", "--build", tmp_path, "--target", "help"]).stdout
    assert "consumer" in targets and "aotriton_kernels" in targets
    assert "pyaotriton" not in targets and "store_check" not in targets  # off when embedded
    run(["cmake", "--build", tmp_path])
    r = run([tmp_path / "consumer"])
    assert "profile minimal, archs 90" in r.stdout and "silu_and_mul(empty): success" in r.stdout
    assert list((tmp_path / "aotriton/kernels/images/sm_90/act_and_mul").glob("*.aks"))
