#!/usr/bin/env bash
# The decode-speed round in one device call (issue 12 item 7, issue 13 int4):
# tune the KV-cache decode kernel and the int4 w4a16 grouped GEMM (JIT, in a
# copy of the tree, so a build running beside it never sees tuning/ change),
# rebuild the library with the winners (incremental: only the new configs
# compile), then bench decode and the int4 rows, printing roofline fractions.
# About 4-5 minutes with a build in place (install/, build/), plus ~2 for the
# decode/int4 GPU tests; without a build it first builds PROFILE (default
# gputest, ~260 s on 16 cores) while the tuners run. Fits one 10-minute call.
#   DECODE_BUDGET_S=75 INT4_BUDGET_S=90     tuner budgets (resumable: run again to continue)
#   SKIP_TUNE=1                            bench only (the committed databases)
#   SKIP_TESTS=1                           no GPU tests at the end (decode, int4: ~2 min)
# Results: $OUT/tuning/*.json (commit them to tuning/sm_90/), $OUT/decode_sm90.json,
# $OUT/tune_decode.log, $OUT/bench_decode.log, $OUT/bench_int4.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT/tuning"
export PYTHONUNBUFFERED=1
export DECODE_BUDGET_S=${DECODE_BUDGET_S:-75} INT4_BUDGET_S=${INT4_BUDGET_S:-90}
start=$(date +%s)
el() { echo "$(( $(date +%s) - start )) s"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
tune_pid=
if [ -z "${SKIP_TUNE:-}" ]; then
  rm -rf /tmp/aotriton-tune-dec && mkdir -p /tmp/aotriton-tune-dec
  cp -r python tritonsrc tuning tools /tmp/aotriton-tune-dec/
  (cd /tmp/aotriton-tune-dec && STEPS="decode int4" OUT=$OUT tools/gpu_tune.sh > "$OUT/tune_decode.log" 2>&1) &
  tune_pid=$!
fi
if [ ! -f install/lib/libaotriton.a ]; then
  STEPS=build PROFILE=${PROFILE:-gputest} OUT=$OUT tools/gpu_run.sh || { echo "build failed"; exit 1; }
  echo "build done after $(el)"
fi
if [ -n "$tune_pid" ]; then
  wait "$tune_pid"
  cat "$OUT/tune_decode.log"
  echo "tuners done after $(el)"
  changed=0
  for db in attn_decode fused_moe_gemm_wq; do
    if [ -f "$OUT/tuning/$db.json" ] && ! cmp -s "$OUT/tuning/$db.json" "tuning/sm_90/$db.json"; then
      cp "$OUT/tuning/$db.json" tuning/sm_90/ && changed=1
    fi
  done
  if [ $changed = 1 ]; then
    t0=$(date +%s)
    ninja -C build install > "$OUT/rebuild.log" 2>&1 && echo "rebuild with the new entries: $(( $(date +%s) - t0 )) s" \
      || { echo "rebuild failed"; tail -20 "$OUT/rebuild.log"; }
  fi
fi
echo "=== bench_decode ($(el))"
timeout 150 python3 bench/bench_decode.py --contexts 8192,65536 --sweep-splits=8,32,66,128 2>&1 \
  | tee "$OUT/bench_decode.log" | tail -12
echo "=== int4 w4a16 rows of bench_moe_coverage ($(el))"
timeout 120 python3 bench/bench_moe_coverage.py --sections quant 2>&1 | tee "$OUT/bench_int4.log" | tail -12
cp bench/results/decode_sm90.json bench/results/moe_coverage_sm90.json "$OUT/" 2>/dev/null
if [ -z "${SKIP_TESTS:-}" ]; then
  # Correctness of what now runs: the AOT decode and int4 tests with the rebuilt
  # library, and the tuning options through the JIT (the full GPU suite has them too).
  echo "=== decode / int4 GPU tests ($(el))"
  timeout "${TEST_TIMEOUT_S:-180}" python3 -m pytest -q test/gpu/test_decode_gpu.py \
    test/gpu/test_decode_int4_configs_gpu.py test/gpu/test_moe_quant_gpu.py 2>&1 | tee "$OUT/test_decode_int4.log" | tail -6
fi
echo "done after $(el)"
