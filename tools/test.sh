#!/usr/bin/env bash
# Run every test: CPU tests (generator, store, runtime without a driver,
# consumer project, Triton kernels under TRITON_INTERPRET=1) and GPU tests
# (skipped cleanly without a GPU). Extra arguments go to pytest.
# The interpreter is a process-wide switch in Triton, so those tests run in
# their own pytest process.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$PWD/.venv/bin/python}
export AOTRITON_BUILD_DIR=${BUILD_DIR:-$PWD/build}
export AOTRITON_PREFIX=${PREFIX:-$PWD/install}
status=0
env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/cpu "$@" || status=1
TRITON_INTERPRET=1 "$PYTHON" -m pytest -q test/cpu "$@" || status=1
env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/gpu "$@" || status=1
exit $status
