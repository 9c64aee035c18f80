"""GPU tests: every test here is skipped cleanly without a CUDA GPU."""
import pytest

from testenv import gpu_available


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "/gpu/" in str(item.fspath):
            item.add_marker(skip)
