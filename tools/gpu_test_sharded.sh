#!/usr/bin/env bash
# The GPU suite split into SHARDS pytest processes side by side on the one GPU
# (most tests are host-bound: small shapes, float64 references), with a JUnit
# report per shard summed into one total line. Tests marked big_memory (tens of GB) run
# alone after the shards: beside 12 shards one ran out of an H100's 80 GB (2026-12-05).
# Needs an installed build.
#   SHARDS=8  TIME_S=480  TESTS=test/gpu  PYTEST_ARGS=...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; D=$OUT/shards; rm -rf "$D"; mkdir -p "$D"
PYTHON=${PYTHON:-python3}
SHARDS=${SHARDS:-8}
# The other-arch installs gpu_run.sh makes, when they are there (SKIP_OTHER_ARCH_BUILDS=1 skips
# them; then the two tests that need them skip instead of failing on a missing prefix).
[ -d "$PWD/install80" ] && export AOTRITON_OTHER_ARCH_PREFIX=${AOTRITON_OTHER_ARCH_PREFIX:-$PWD/install80}
[ -d "$PWD/install80ptx" ] && export AOTRITON_PTX_PREFIX=${AOTRITON_PTX_PREFIX:-$PWD/install80ptx}
# shellcheck disable=SC2086  # TESTS is a list of paths
"$PYTHON" -m pytest --collect-only -q -p no:cacheprovider -m "not big_memory" ${TESTS:-test/gpu} 2>/dev/null \
  | grep '::' > "$D/all_ids.txt"
# shellcheck disable=SC2086
"$PYTHON" -m pytest --collect-only -q -p no:cacheprovider -m big_memory ${TESTS:-test/gpu} 2>/dev/null \
  | grep '::' > "$D/big_ids.txt"
echo "GPU suite: $(wc -l < "$D/all_ids.txt") tests in $SHARDS shards, then $(wc -l < "$D/big_ids.txt") alone (big_memory)"
awk -v n="$SHARDS" -v d="$D" '{ print > (d "/ids_" (NR % n) ".txt") }' "$D/all_ids.txt"
pids=()
for ((i = 0; i < SHARDS; i++)); do
  [ -s "$D/ids_$i.txt" ] || continue
  mapfile -t ids < "$D/ids_$i.txt"
  # shellcheck disable=SC2086
  timeout "${TIME_S:-480}" "$PYTHON" -m pytest -q -rs -p no:cacheprovider --junitxml="$D/junit_$i.xml" ${PYTEST_ARGS:-} \
    "${ids[@]}" > "$D/shard_$i.log" 2>&1 & pids+=($!)
done
wait "${pids[@]}"
if [ -s "$D/big_ids.txt" ]; then
  mapfile -t ids < "$D/big_ids.txt"
  # shellcheck disable=SC2086
  timeout "${TIME_S:-480}" "$PYTHON" -m pytest -q -rs -p no:cacheprovider --junitxml="$D/junit_big.xml" ${PYTEST_ARGS:-} \
    "${ids[@]}" > "$D/shard_big.log" 2>&1
fi
grep -h "^FAILED\|^ERROR" "$D"/shard_*.log | head -60
for f in "$D"/shard_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done
"$PYTHON" tools/junit_total.py "$D"/junit_*.xml
