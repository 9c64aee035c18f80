#!/usr/bin/env bash
# "Performance unchanged, same run, before and after" for a refactor: build an
# older tree (exported to .before/ by `git archive REV | tar -x -C .before`, carried
# to the GPU machine) with the ci profile, then time the host path of both trees
# back to back (new, old, new) with each tree's own bench_launch_overhead.py.
# Both trees build the ci profile into build_ci/ and build_before/ (not inside
# .before/: a carried path is replaced on every device call, a build in it too).
#   SCRIPT="tools/before_after.sh all" tools/gpu_session.sh start   (build both, then bench)
#   tools/before_after.sh build | bench
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
OLD=$PWD/.before
[ -d "$OLD" ] || { echo "no .before/ tree"; exit 2; }
LZMA=$PWD/.deps/lzma/usr
LIB=$(ls /usr/lib/x86_64-linux-gnu/liblzma.so.5 /lib/x86_64-linux-gnu/liblzma.so.5 2>/dev/null | head -1)
build_tree() {  # tree name
  local t0; t0=$(date +%s)
  (cd "$1" && PYTHON=python3 AOTRITON_PROFILE=ci AOTRITON_TARGET_ARCH=90 BUILD_DIR=$PWD_ROOT/build_$2 PREFIX=$PWD_ROOT/install_$2 \
    CMAKE_ARGS="-DLIBLZMA_INCLUDE_DIR=$LZMA/include -DLIBLZMA_LIBRARY=$LIB" tools/build.sh) > "$OUT/build_$2.log" 2>&1 \
    && echo "$2 tree build (ci, sm_90): $(( $(date +%s) - t0 )) s" || { echo "$2 tree build failed"; tail -20 "$OUT/build_$2.log"; return 1; }
}
PWD_ROOT=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
case ${1:-bench} in
  build|all)
    build_tree "$PWD" ci & a=$!
    build_tree "$OLD" before & b=$!
    wait $a || exit 1; wait $b || exit 1
    ;;&
  bench|all)
    # The ci profile holds fp16 routing only: both trees' benches run fused_moe in fp16 (the
    # before tree's copy gets the same one-line option as the current bench).
    export AOTRITON_BENCH_MOE_DTYPE=float16
    sed -i 's/^    dt = torch.bfloat16$/    dt = getattr(torch, os.environ.get("AOTRITON_BENCH_MOE_DTYPE", "bfloat16"))/' "$OLD/bench/bench_launch_overhead.py"
    i=0
    for tree in "$PWD" "$OLD" "$PWD"; do
      i=$((i + 1)); name=$([ "$tree" = "$OLD" ] && echo before || echo after)
      echo "=== host path, $name tree ($tree)"
      b=$PWD_ROOT/build_$([ "$name" = before ] && echo before || echo ci)
      (cd "$tree" && python3 bench/bench_launch_overhead.py --build-dir "$b" --prefix "${b/build_/install_}" --out "$OUT/host_${i}_$name.json") 2>&1 | tail -25
    done
    ;;
esac
