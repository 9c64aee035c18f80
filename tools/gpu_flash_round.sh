#!/usr/bin/env bash
# A quick device round for attention work: build the flashtest profile for
# sm_90 (no other-arch builds), run the flash GPU tests in shards, then the
# forward/backward benchmark, all under DEADLINE_S. Start it detached:
#   SCRIPT=tools/gpu_flash_round.sh tools/gpu_session.sh start
#   TESTS="test/gpu/a.py test/gpu/b.py"  BENCH="bench/bench_flash.py ..."  DEADLINE_S=540
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( ${DEADLINE_S:-540} - ($(date +%s) - start) )); }
STEPS=build PROFILE=${PROFILE:-flashtest} SKIP_OTHER_ARCH_BUILDS=1 OUT=$OUT tools/gpu_run.sh || { echo "build failed"; exit 1; }
TESTS=${TESTS:-test/gpu/test_flash_hopper_gpu.py test/gpu/test_flash_fwd_gpu.py test/gpu/test_flash_bwd_gpu.py}
tests_s=$(( $(left) - ${BENCH_S:-150} )); [ "$tests_s" -lt 60 ] && tests_s=60
SHARDS=${SHARDS:-8} TIME_S=$tests_s TESTS=$TESTS OUT=$OUT tools/gpu_test_sharded.sh 2>&1 | tail -40
echo "time left after tests: $(left) s"
# shellcheck disable=SC2086  # BENCH is a script plus its arguments
[ "$(left)" -gt 30 ] && timeout "$(left)" python3 ${BENCH:-bench/bench_flash.py --dtype bf16,fp16 --seqlens 512,2048,8192 --extra-head-dims=} 2>&1 | tee "$OUT/bench.log" | tail -60
echo "done after $(( $(date +%s) - start )) s"
