#!/usr/bin/env bash
# Run tools/gpu_run.sh detached on the GPU machine (a lease command may stop
# at 10 minutes; the machine stays warm between calls) and wait for it:
#   tools/gpu_session.sh start   STEPS=... (env as for gpu_run.sh; SCRIPT=tools/gpu_final.sh for another driver)
#   tools/gpu_session.sh wait    wait up to WAIT_S (default 560) more seconds
# Logs collect in /tmp/aotriton-run and are copied to $OUT on every call.
# The machine is given back ~30 s after a call returns, and the detached job
# with it: issue the `wait` call at once (a wait that came minutes late found a
# fresh machine and the final run's benchmarks were lost, 2026-12-02).
# A machine is held at most 30 minutes from its first call: a job started at
# minute 28 died with it (2026-12-03). Pass AOTRITON_COMMIT as a literal: a
# $(git ...) in the command runs on the device, whose .git copy is stale.
# A refused start ("no device machine could be started") still cost ~130 s of the
# session's device budget (2026-12-05: three refusals and two quick ones took
# 670 -> 248 s, and the verification run never happened): make the first call the
# complete run (tests, whole suite, benchmarks); retry a refused start once or twice.
# A `wait` issued at once can still find the machine gone (2026-12-05: with ~6 minutes of
# device time left after a 560 s first call, the wait found a fresh machine, bench_moe's
# results died with the old one and the fresh start cost ~120 s): order BENCHES so that
# what matters most finishes inside the first call.
# The machine may be an H100 80GB rather than the H200 (2026-12-05: six refused starts, then an
# H100): results say which GPU ran them; keep H200-named result files for H200 runs (bench/results/h100/).
# 2026-12-06 (twenty-seventh session): thirteen refused calls cost 1606 of the 1800 device seconds
# (90-180 s each; 15 s when the answer is "none asked for ... in N min"): name kind nvidia-h200 (it may
# take either card; a plain call after a refusal asks for an H200 only), keep the first command
# complete, and space retries by the minutes the answer names.
# 2026-12-06 (twenty-eighth): two refusals, then the third call (kind nvidia-h200, after the named wait)
# got an H100. Follow-up calls on the warm machine (a bench after the job): `cd /tmp/aotriton-src`
# first - the build and install live in that copy, the lease's repository root has none (a bench there
# failed with "No module named 'aotriton'").
# 2026-12-06 (twenty-ninth): kind nvidia-h200 got an H200 on the first call; a gputest build (193 s), the
# hopper tuner beside it and the whole suite (13 shards) ended with 51 s of a 570 s deadline: benches after
# the suite need a second call (on the warm machine, from /tmp/aotriton-src).
# 2026-12-06 (thirtieth): nine calls of kind nvidia-h200 were refused (90-181 s of device time each,
# 1186 s in all with one nvidia-h100-x1 refusal of 15 s) though spaced by the minutes named; the tenth got
# an H100 with 614 s left. Once the budget falls under ~800 s, shrink the first call (PROFILE=moetest,
# TESTS_FIRST of what changed, DEADLINE_S ~330) so that a start still fits.
# 2026-12-07 (thirty-first and thirty-second): in each session fifteen refused starts and three quick answers
# took 1800 -> 314 s, and at 314 s a start was refused for budget ("too little device-machine time is left",
# 90 s more) though `status` said can_start_another: true. Try the last, lean call with more than ~400 s left.
# 2026-12-07 (thirty-third): the first call got an H100 at once; later, a start at 520 s left was refused (180 s
# lost), a stray call at 340 s cost 90 s, and at 250 s a start was refused for budget. Verify on the warm machine.
# 2026-12-07 (thirty-fourth): two H100 starts at once (1800 and 1029 s left); then three refusals (180, 90 and 180 s
# lost, 727 -> 262 s), and a start at 262 s left came at once (an H100): a start is not refused for budget below
# ~350 s every time. With little left, run JIT-only experiments (no build: ~60 s of overhead, then seconds each).
# 2026-12-07 (thirty-fifth): eight refused starts of kind nvidia-h200 and two "none asked for" answers took
# 1800 -> 764 s over an hour (spaced by the minutes named); the ninth start, at 764 s left, came at once (an H100)
# and its 330 s job plus four short follow-ups on the warm machine used the rest. The flash GPU files' JIT tests
# (test_flash_hopper_gpu.py "through_the_jit") take minutes: in a short call select the AOT tests with -k.
# 2026-12-07 (thirty-sixth): ten refused starts of kind nvidia-h200 (75-181 s each, spaced by the minutes
# named) and three "none asked for" answers took 1800 -> ~600 s over an hour; the next start (an H100) ran a
# lean 340 s job (flashtest build 184 s, three test files, one bench pair) and three short follow-ups on the
# warm machine; 143 s were left. A start with < ~300 s left is not offered (can_start_another: false).
# 2026-12-07 (thirty-seventh): no machine at all: five refused starts (90-181 s) and eleven "none asked for" answers
# (15 s) took 1800 -> 269 s over 85 minutes, and then a start was refused for budget. A JIT-only call (no build;
# e.g. bench/experiments/flash_varlen_jit.py, hopper_persistent.py, ncu_flash_fwd.sh IMPLS="jit cudnn") is the
# fallback once the budget is below ~650 s.
# 2026-12-08 (thirty-eighth): 1800 -> 390 s with no command run: refused starts of 180 s (five), "none asked for"
# answers of 15 s, and one start that got a machine which was "taken back for other work before the call
# finished" (~270 s lost); at 390 s a start was refused for budget ("too little device-machine time is left").
# Branches do not survive into the next session's checkout: park GPU-gated work in docs/pending/ as patches.
# Every lease call re-copies the working tree over the repository root, which
# pulled python/compile_client.py from under a running build (2026-12-03):
# `start` runs from a private copy of the tree in $SRC instead.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=/tmp/aotriton-run
SRC=/tmp/aotriton-src
mkdir -p "$RUN"
if [ "${1:-wait}" = start ]; then
  rm -f "$RUN/done"
  rm -rf "$SRC"; mkdir -p "$SRC"
  tar cf - --exclude=./build --exclude=./install --exclude=./.venv . | tar xf - -C "$SRC"
  cd "$SRC"
  OUT=$RUN setsid bash -c "${SCRIPT:-tools/gpu_run.sh} > $RUN/console.log 2>&1; echo \$? > $RUN/done" < /dev/null &
fi
if [ "${1:-wait}" != start ] && [ ! -f "$RUN/console.log" ]; then
  # A fresh machine (the last one was given back): nothing to wait for, and
  # waiting would spend device time on an idle GPU (2026-12-02, 540 s lost).
  echo "no run on this machine: it was given back and the job died with it"; exit 3
fi
end=$(( $(date +%s) + ${WAIT_S:-560} ))
while [ ! -f "$RUN/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
[ -d "$SRC" ] && cd "$SRC"
mkdir -p "${OUT:=/tmp/aotriton-out}"; tar czf "$OUT/run.tgz" -C "$RUN" . 2>/dev/null; tar czf "$OUT/results.tgz" bench/results tuning 2>/dev/null
if [ -f "$RUN/done" ]; then echo "finished, exit $(cat "$RUN/done")"; else echo "still running"; fi
tail -c 9000 "$RUN/console.log"
