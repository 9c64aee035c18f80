#!/usr/bin/env bash
# A second lease call on the warm machine, after `tools/gpu_session.sh start` built and tested:
# works in that run's tree (/tmp/aotriton-src: its build and install), under DEADLINE_S, and
# returns logs and result files in $OUT. Issue it at once (the machine goes back ~30 s after
# a call returns). Each step is skipped when less than MIN_S seconds are left.
#   BENCHES="cmd;cmd"        benchmarks first (python scripts, or .sh run by bash)
#   TUNE="tune.py args"      then python/tune.py, an incremental rebuild with its entries, and
#   TESTS="test/gpu/a.py"    these tests against the rebuilt library
#   BENCHES_AFTER="cmd;cmd"  benchmarks of the rebuilt library
set -uo pipefail
SRC=${SRC:-/tmp/aotriton-src}
cd "$SRC" || { echo "no $SRC: the first call's machine was given back"; exit 3; }
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONPATH=$SRC/install/lib/python:$SRC PYTHONUNBUFFERED=1  # the installed package and the repo
start=$(date +%s)
left() { echo $(( ${DEADLINE_S:-560} - ($(date +%s) - start) )); }
# shellcheck source=tools/bench_list.sh
. tools/bench_list.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_bench_list "$OUT/bench.log" "${BENCHES:-}"
if [ -n "${TUNE:-}" ] && [ "$(left)" -gt "${MIN_S:-60}" ]; then
  echo "=== tune.py $TUNE ($(left) s left)"
  # shellcheck disable=SC2086  # tune.py's arguments
  timeout "${TUNE_S:-240}" python3 python/tune.py $TUNE 2>&1 | grep -v "tuning:" | tee "$OUT/tune2.log" | tail -30
  cp tuning/sm_90/*.json "$OUT/" 2>/dev/null
  t0=$(date +%s)
  ninja -C build install > "$OUT/rebuild2.log" 2>&1 && echo "rebuild with the new entries: $(( $(date +%s) - t0 )) s" \
    || { echo "rebuild failed"; tail -20 "$OUT/rebuild2.log"; }
  if [ -n "${TESTS:-}" ] && [ "$(left)" -gt "${MIN_S:-60}" ]; then
    # shellcheck disable=SC2086  # a list of paths
    timeout "$(( $(left) - ${AFTER_S:-0} ))" python3 -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tail -8
  fi
fi
run_bench_list "$OUT/bench_after.log" "${BENCHES_AFTER:-}"
tar czf "$OUT/run2.tgz" -C /tmp/aotriton-run . 2>/dev/null
echo "done after $(( $(date +%s) - start )) s"
