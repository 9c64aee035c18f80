#!/usr/bin/env bash
# One call on the GPU machine: build with the same CMake as CI (lzma headers
# carried in .deps/lzma since that machine has none), run the GPU tests, the
# C++ GPU program and the benchmarks. Logs go to $OUT when set.
#   STEPS="build test sanitize bench"  which steps to run (default build test bench)
#   PROFILE=release            build profile
#   TESTS=test/gpu             pytest paths; PYTEST_ARGS extra pytest arguments
#   SANITIZE="memcheck:test/gpu/x.py racecheck:test/gpu/y.py"
#                              compute-sanitizer tool:pytest-path pairs (step sanitize)
#   BENCHES="a.py;b.py --quick" benchmark commands, ';'-separated
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}
mkdir -p "$OUT"
STEPS=${STEPS:-build test bench}
export PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
LZMA=$PWD/.deps/lzma/usr
LIB=$(ls /usr/lib/x86_64-linux-gnu/liblzma.so.5 /lib/x86_64-linux-gnu/liblzma.so.5 2>/dev/null | head -1)
export CMAKE_ARGS="-DLIBLZMA_INCLUDE_DIR=$LZMA/include -DLIBLZMA_LIBRARY=$LIB ${CMAKE_ARGS:-}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
status=0
if [[ $STEPS == *build* ]]; then
  t0=$(date +%s)
  AOTRITON_PROFILE=${PROFILE:-release} AOTRITON_TARGET_ARCH=90 tools/build.sh > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "build (${PROFILE:-release}, sm_90): $(( $(date +%s) - t0 )) s"
  # SKIP_OTHER_ARCH_BUILDS=1: a quick round whose tests need neither of these.
  if [ -z "${SKIP_OTHER_ARCH_BUILDS:-}" ]; then
    # A build with only sm_80 images, for the arch-not-in-build test.
    BUILD_DIR=$PWD/build80 PREFIX=$PWD/install80 AOTRITON_PROFILE=ci AOTRITON_TARGET_ARCH=80 \
      tools/build.sh > "$OUT/build80.log" 2>&1 || { tail -20 "$OUT/build80.log"; status=1; }
    # sm_80 only with its PTX kept (minimal profile: silu_and_mul), for the PTX fallback test.
    BUILD_DIR=$PWD/build80ptx PREFIX=$PWD/install80ptx AOTRITON_PROFILE=minimal AOTRITON_TARGET_ARCH=80 \
      CMAKE_ARGS="$CMAKE_ARGS -DAOTRITON_PTX_FALLBACK=ON" \
      tools/build.sh > "$OUT/build80ptx.log" 2>&1 || { tail -20 "$OUT/build80ptx.log"; status=1; }
  fi
  "$PYTHON" install/lib/aotriton.tools/inspect_images.py install | tail -12
fi
if [[ $STEPS == *test* ]]; then
  export AOTRITON_OTHER_ARCH_PREFIX=$PWD/install80 AOTRITON_PTX_PREFIX=$PWD/install80ptx
  "$PYTHON" -m pytest -q -rs ${TESTS:-test/gpu} ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/test_gpu.log" | tail -25 || status=1
  "$PYTHON" -m pytest -q test/cpu/test_install.py test/cpu/test_runtime_nogpu.py 2>&1 | tail -3 || status=1
fi
if [[ $STEPS == *sanitize* ]]; then
  export AOTRITON_OTHER_ARCH_PREFIX=$PWD/install80
  for pair in ${SANITIZE:-}; do
    tool=${pair%%:*} path=${pair#*:}
    compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
      "$PYTHON" -m pytest -q -x -p no:cacheprovider "$path" > "$OUT/sanitize_${tool}_$(basename "$path" .py).log" 2>&1
    rc=$?
    echo "compute-sanitizer $tool $path: exit $rc; $(grep -E 'ERROR SUMMARY|passed|failed' \
      "$OUT/sanitize_${tool}_$(basename "$path" .py).log" | tail -2 | tr '\n' ' ')"
    [ $rc -eq 0 ] || status=1
  done
fi
if [[ $STEPS == *bench* ]]; then
  IFS=';' read -ra benches <<< "${BENCHES:-bench/bench_launch_overhead.py;bench/bench_flash.py;bench/bench_moe.py}"
  for b in "${benches[@]}"; do
    # shellcheck disable=SC2086  # a bench command is a script plus its arguments
    "$PYTHON" $b 2>&1 | tee -a "$OUT/bench.log" | tail -60 || status=1
  done
fi
exit $status
