#!/usr/bin/env bash
# Run every test: CPU tests (generator, store, runtime without a driver,
# consumer project, Triton kernels under TRITON_INTERPRET=1) and GPU tests
# (skipped cleanly without a GPU). Extra arguments go to pytest.
# The interpreter is a process-wide switch in Triton, so those tests run in
# their own pytest process. The last line is the total over every run:
# "N passed, N failed, N skipped" (errors count as failed).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$PWD/.venv/bin/python}
export AOTRITON_BUILD_DIR=${BUILD_DIR:-$PWD/build}
export AOTRITON_PREFIX=${PREFIX:-$PWD/install}
start=$(date +%s)
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0
run() {  # run <name> <env...> -- pytest args
  local name=$1; shift
  "$@" --junitxml="$reports/$name.xml"
  local rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 5 ] || status=1  # 5: nothing selected (e.g. -k)
}
run cpu env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/cpu "$@"
# The interpreter tests are CPU-bound, one core each: spread them over the
# cores when pytest-xdist is there (CI: 370 s -> ~190 s on two cores).
parallel=()
if "$PYTHON" -c "import xdist" 2>/dev/null && [ "$(nproc)" -gt 1 ]; then
  parallel=(-n "$(( $(nproc) < 4 ? $(nproc) : 4 ))")
fi
run interp env TRITON_INTERPRET=1 "$PYTHON" -m pytest -q "${parallel[@]}" test/cpu "$@"
run gpu env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/gpu "$@"
echo "tests took $(( $(date +%s) - start )) s${AOTRITON_CI_START:+ (CI: $(( $(date +%s) - AOTRITON_CI_START )) s since start)}"
"$PYTHON" tools/junit_total.py "$reports"/cpu.xml "$reports"/interp.xml "$reports"/gpu.xml || status=1
exit $status
