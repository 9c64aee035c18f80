#!/usr/bin/env bash
# "Performance unchanged, same run, before and after" for a refactor: build an
# older tree (exported to .before/ by `git archive REV | tar -x -C .before`, carried
# to the GPU machine) with the ci profile, then time the host path of both trees
# back to back (new, old, new) with each tree's own bench_launch_overhead.py.
#   tools/before_after.sh build   (beside the main build: SIDE="bash tools/before_after.sh build")
#   tools/before_after.sh bench   (a BENCHES entry)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
OLD=$PWD/.before
[ -d "$OLD" ] || { echo "no .before/ tree"; exit 2; }
LZMA=$PWD/.deps/lzma/usr
LIB=$(ls /usr/lib/x86_64-linux-gnu/liblzma.so.5 /lib/x86_64-linux-gnu/liblzma.so.5 2>/dev/null | head -1)
case ${1:-bench} in
  build)
    t0=$(date +%s)
    (cd "$OLD" && PYTHON=python3 AOTRITON_PROFILE=ci AOTRITON_TARGET_ARCH=90 \
      CMAKE_ARGS="-DLIBLZMA_INCLUDE_DIR=$LZMA/include -DLIBLZMA_LIBRARY=$LIB" tools/build.sh) > "$OUT/build_before.log" 2>&1 \
      && echo "before-tree build (ci, sm_90): $(( $(date +%s) - t0 )) s" || { echo "before-tree build failed"; tail -20 "$OUT/build_before.log"; exit 1; }
    ;;
  bench)
    i=0
    for tree in "$PWD" "$OLD" "$PWD"; do
      i=$((i + 1)); name=$([ "$tree" = "$OLD" ] && echo before || echo after)
      echo "=== host path, $name tree ($tree)"
      (cd "$tree" && python3 bench/bench_launch_overhead.py --out "$OUT/host_${i}_$name.json") 2>&1 | tail -25
    done
    ;;
esac
