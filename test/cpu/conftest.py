"""Triton's interpreter is a process-wide switch: *_interp.py files run only
in a process started with TRITON_INTERPRET=1, everything else only without it
(tools/test.sh runs both)."""
import os

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.stem.endswith("_interp") != INTERPRET:
        return True
    return None
