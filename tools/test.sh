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
# The interpreter tests (CPU-bound, one core) run beside the other CPU tests,
# whose package builds and single-threaded steps leave a core idle much of the
# time: on two cores that hides most of the interpreter run (CI: ~190 s with
# pytest-xdist after the other tests, 2026-12-03). Their output follows.
(env TRITON_INTERPRET=1 "$PYTHON" -m pytest -q test/cpu --junitxml="$reports/interp.xml" "$@" \
  > "$reports/interp.log" 2>&1; echo $? > "$reports/interp.rc") &
interp_pid=$!
run cpu env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/cpu "$@"
wait "$interp_pid"
echo "--- interpreter tests (run beside the CPU tests):"
cat "$reports/interp.log"
rc=$(cat "$reports/interp.rc" 2>/dev/null || echo 1)
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || status=1
run gpu env -u TRITON_INTERPRET "$PYTHON" -m pytest -q test/gpu "$@"
echo "tests took $(( $(date +%s) - start )) s${AOTRITON_CI_START:+ (CI: $(( $(date +%s) - AOTRITON_CI_START )) s since start)}"
"$PYTHON" tools/junit_total.py "$reports"/cpu.xml "$reports"/interp.xml "$reports"/gpu.xml || status=1
exit $status
