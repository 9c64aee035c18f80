#!/usr/bin/env bash
# One device round (this session's probe): the persistent forward experiment
# (JIT) on the idle GPU while the gputest build runs, then the decode tuner,
# a rebuild with its entries, and bench_decode with roofline fractions.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT/tuning"
export PYTHONUNBUFFERED=1
start=$(date +%s); el() { echo "$(( $(date +%s) - start )) s"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(timeout 330 python3 bench/experiments/hopper_persistent.py --json "$OUT/flash_hopper_persistent_r2_sm90.json" \
   > "$OUT/persistent.log" 2>&1; echo "persistent exit $?" >> "$OUT/persistent.log") & p=$!
STEPS=build PROFILE=gputest OUT=$OUT tools/gpu_run.sh > "$OUT/build.log" 2>&1; echo "build exit $? after $(el)"
tail -3 "$OUT/build.log"
wait $p; echo "=== persistent ($(el))"; tail -32 "$OUT/persistent.log"
rm -rf /tmp/aotriton-tune-dec && mkdir -p /tmp/aotriton-tune-dec && cp -r python tritonsrc tuning tools /tmp/aotriton-tune-dec/
(cd /tmp/aotriton-tune-dec && STEPS=decode DECODE_BUDGET_S=${DECODE_BUDGET_S:-90} OUT=$OUT tools/gpu_tune.sh) > "$OUT/tune_decode.log" 2>&1
tail -8 "$OUT/tune_decode.log"; echo "tuner done after $(el)"
if [ -f "$OUT/tuning/attn_decode.json" ] && ! cmp -s "$OUT/tuning/attn_decode.json" tuning/sm_90/attn_decode.json; then
  cp "$OUT/tuning/attn_decode.json" tuning/sm_90/
  ninja -C build install > "$OUT/rebuild.log" 2>&1 && echo "rebuild: ok after $(el)" || tail -20 "$OUT/rebuild.log"
fi
echo "=== bench_decode ($(el))"
timeout 200 python3 bench/bench_decode.py --contexts 1024,8192,32768,131072 --sweep-splits=8,32,66,128 2>&1 | tee "$OUT/bench_decode.log" | tail -16
cp bench/results/decode_sm90.json "$OUT/" 2>/dev/null
echo "=== decode GPU tests ($(el))"
timeout 150 python3 -m pytest -q test/gpu/test_decode_gpu.py 2>&1 | tail -4
echo "done after $(el)"
