#!/usr/bin/env bash
# The end-of-session device run in one detached job (start it with
# `SCRIPT=tools/gpu_final.sh tools/gpu_session.sh start`): build the gputest
# profile while the MoE tuner fills the remaining quant modes on the idle GPU,
# then the whole GPU suite, then the benchmarks in priority order while time
# is left (DEADLINE_S from the start). Everything lands under $OUT.
#   BENCHES="cmd;cmd" (python scripts, or .sh scripts run by bash)  QUANTS=fp16,fp8_tensor,fp8_block  TUNE_BUDGET_S=200  DEADLINE_S=840
#   TUNE_STEPS="moe hopper"  the gpu_tune.sh steps run beside the build ('' for none)
#   TESTS_FIRST="test/gpu/a.py"  run these before the whole suite (their result shows early in the log; TESTS_FIRST_S=120)
#   SUITE=0  skip the whole suite (a short call after one that ran it: TESTS_FIRST covers what changed)
#   SIDE="bash x.sh"  a JIT experiment run on the idle GPU beside the build (log: $OUT/side.log)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( ${DEADLINE_S:-840} - ($(date +%s) - start) )); }
tune_pid=
if [ -n "${TUNE_STEPS-moe}" ]; then
  # In a copy of the tree: the build reads tuning/ and must not see it change.
  rm -rf /tmp/aotriton-tune && mkdir -p /tmp/aotriton-tune && cp -r python tritonsrc tuning tools /tmp/aotriton-tune/
  (cd /tmp/aotriton-tune && STEPS=${TUNE_STEPS-moe} QUANTS=${QUANTS:-fp16,fp8_tensor,fp8_block} \
    BUDGET_S=${TUNE_BUDGET_S:-200} OUT=$OUT tools/gpu_tune.sh > "$OUT/tune.log" 2>&1) & tune_pid=$!
fi
side_pid=
if [ -n "${SIDE:-}" ]; then
  # shellcheck disable=SC2086  # a command line
  (OUT=$OUT timeout "${SIDE_S:-420}" $SIDE > "$OUT/side.log" 2>&1; echo "side exit $?" >> "$OUT/side.log") & side_pid=$!
fi
# A failed build stops the tuner and side job too: left running, a tuner held
# 110 GB of GPU memory into the next call's run (2026-12-04).
STEPS=build PROFILE=${PROFILE:-gputest} OUT=$OUT tools/gpu_run.sh || {
  echo "build failed"; kill $tune_pid $side_pid 2>/dev/null; pkill -f "python/tune.py"; exit 1; }
if [ -n "$side_pid" ]; then
  wait "$side_pid"; echo "side job ($SIDE):"; tail -30 "$OUT/side.log"
fi
if [ -n "$tune_pid" ]; then
  wait "$tune_pid"; echo "tuner:"; grep -v "^ *$" "$OUT/tune.log" | tail -12
  # The new entries' configs: an incremental rebuild (cmake re-runs generate.py on a changed database).
  changed=0
  for db in "$OUT"/tuning/*.json; do
    [ -f "$db" ] || continue
    cmp -s "$db" "tuning/sm_90/$(basename "$db")" || { cp "$db" tuning/sm_90/; changed=1; }
  done
  if [ $changed = 1 ]; then
    t0=$(date +%s)
    ninja -C build install > "$OUT/rebuild.log" 2>&1 && echo "rebuild with the new tuning entries: $(( $(date +%s) - t0 )) s" \
      || { echo "rebuild failed"; tail -20 "$OUT/rebuild.log"; }
  fi
fi
echo "time left after build: $(left) s"
if [ -n "${TESTS_FIRST:-}" ]; then
  # shellcheck disable=SC2086  # a list of paths
  timeout "${TESTS_FIRST_S:-120}" python3 -m pytest -q -p no:cacheprovider $TESTS_FIRST 2>&1 | tail -25
fi
if [ "${SUITE:-1}" != 0 ]; then
  OUT=$OUT tools/gpu_test_sharded.sh 2>&1 | tail -80
  python3 -m pytest -q test/cpu/test_install.py test/cpu/test_runtime_nogpu.py 2>&1 | tail -2
fi
echo "time left after tests: $(left) s"
# shellcheck source=tools/bench_list.sh
. tools/bench_list.sh
MIN_S=${MIN_BENCH_S:-60} run_bench_list "$OUT/bench.log" "${BENCHES:-bench/bench_launch_overhead.py}"
echo "done after $(( $(date +%s) - start )) s"
