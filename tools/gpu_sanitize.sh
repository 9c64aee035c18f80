#!/usr/bin/env bash
# The whole GPU suite under compute-sanitizer memcheck, split into SHARDS
# pytest processes that run side by side on the one GPU (each has its own
# context; memcheck slows kernels ~10-100x, so one process would outlast a
# device call), plus racecheck on the shared-memory kernels' tests.
#   SHARDS=8  TIME_S=420  TESTS=test/gpu  RACECHECK="pytest -k selections"
# Needs an installed build (tools/gpu_run.sh STEPS=build). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT/sanitize"
PYTHON=${PYTHON:-python3}
SHARDS=${SHARDS:-8}
TIME_S=${TIME_S:-420}
export AOTRITON_OTHER_ARCH_PREFIX=${AOTRITON_OTHER_ARCH_PREFIX:-$PWD/install80}
export AOTRITON_PTX_PREFIX=${AOTRITON_PTX_PREFIX:-$PWD/install80ptx}
"$PYTHON" -m pytest --collect-only -q -p no:cacheprovider ${TESTS:-test/gpu} 2>/dev/null \
  | grep '::' > "$OUT/sanitize/all_ids.txt"
echo "sanitize: $(wc -l < "$OUT/sanitize/all_ids.txt") tests in $SHARDS memcheck shards"
# Round-robin split, so each shard gets a mix of cheap and heavy tests.
awk -v n="$SHARDS" -v d="$OUT/sanitize" '{ print > (d "/ids_" (NR % n) ".txt") }' "$OUT/sanitize/all_ids.txt"
sanitized() {  # tool log-name pytest-args...
  local tool=$1 log=$2; shift 2
  timeout "$TIME_S" compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
    "$PYTHON" -m pytest -q -p no:cacheprovider "$@" > "$OUT/sanitize/$log.log" 2>&1
  echo $? > "$OUT/sanitize/$log.rc"
}
pids=()
for ((i = 0; i < SHARDS; i++)); do
  [ -s "$OUT/sanitize/ids_$i.txt" ] || continue
  mapfile -t ids < "$OUT/sanitize/ids_$i.txt"
  sanitized memcheck "memcheck_$i" "${ids[@]}" & pids+=($!)
done
# racecheck is far slower: small shapes of the flash and MoE kernels only.
F=test/gpu/test_flash_fwd_gpu.py B=test/gpu/test_flash_bwd_gpu.py M=test/gpu/test_moe_fused_gpu.py
V=test/gpu/test_flash_hopper_varlen_gpu.py  # the sm_90 varlen kernel rewrites V rows in shared memory
DEFAULT_RACES="$F::test_head_dims_and_causal[1-64-dtype1] $F::test_head_dims_and_causal[2-128-dtype0] $F::test_varlen $F::test_gqa_and_layouts"
DEFAULT_RACES+=";$V::test_neighbours_non_finite_rows_stay_out"
DEFAULT_RACES+=";$B::test_head_dims_and_causal[1-64-dtype1] $B::test_head_dims_and_causal[0-128-dtype0] $B::test_varlen_matches_per_sequence_reference"
DEFAULT_RACES+=";$M::test_fused_experts $M::test_grouped_gemm $M::test_moe_align_block_size $M::test_topk_softmax"
IFS=';' read -ra races <<< "${RACECHECK:-$DEFAULT_RACES}"
set -f  # test ids hold [..]: no globbing
j=0
for r in "${races[@]}"; do
  # shellcheck disable=SC2086  # a selection is a path plus pytest arguments
  sanitized racecheck "racecheck_$j" $r & pids+=($!)
  j=$((j + 1))
done
wait "${pids[@]}"
set +f
status=0
for f in "$OUT"/sanitize/*.log; do
  rc=$(cat "${f%.log}.rc")
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|[0-9]+ (passed|failed)' "$f" | tail -2 | tr '\n' ' ')
  echo "$(basename "$f" .log): exit $rc; $summary"
  [ "$rc" = 0 ] || status=1
done
exit $status
