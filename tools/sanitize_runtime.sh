#!/usr/bin/env bash
# Build the runtime (v2src + the generated launchers of $BUILD_DIR) and the C++
# check programs with ASan+UBSan into $SAN_DIR, then run the CPU runtime tests
# against them (stand-in driver, no-driver checks, out-of-memory checks).
#   tools/sanitize_runtime.sh [pytest args]
# Needs a configured build (tools/build.sh) for the generated sources.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUILD_DIR=${BUILD_DIR:-$REPO/build}
SAN_DIR=${SAN_DIR:-$BUILD_DIR/san}
PYTHON=${PYTHON:-python3}
CUDA_INC=$(sed -n 's/^CUDAToolkit_INCLUDE_DIR:PATH=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
[ -n "$CUDA_INC" ] || CUDA_INC=$(dirname "$(find /usr/local/cuda*/include -name cuda.h 2>/dev/null | head -1)")
mkdir -p "$SAN_DIR/obj" "$SAN_DIR/test"
ln -sfn "$BUILD_DIR/kernels" "$SAN_DIR/kernels"
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
FLAGS=(-std=c++17 -O1 -g "${SAN[@]}" -I"$REPO/include" -I"$BUILD_DIR/include" -I"$REPO/v2src"
       -I"$BUILD_DIR/kernels/gen" -I"$CUDA_INC")
objs=()
pids=()
for src in "$REPO"/v2src/*.cc "$REPO"/v2src/ops/*.cc "$BUILD_DIR"/kernels/gen/*.cc; do
  obj="$SAN_DIR/obj/$(echo "${src#/}" | tr / _).o"
  objs+=("$obj")
  [ "$obj" -nt "$src" ] && continue
  g++ "${FLAGS[@]}" -c "$src" -o "$obj" & pids+=($!)
  if [ ${#pids[@]} -ge "$(nproc)" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi  # a failed compile stops here
done
for p in "${pids[@]}"; do wait "$p"; done
for t in runtime_check runtime_fake_check alloc_fail_check; do
  g++ "${FLAGS[@]}" "$REPO/test/cpp/$t.cc" "${objs[@]}" -llzma -ldl -lpthread -o "$SAN_DIR/test/$t"
done
g++ -std=c++17 -O1 -g -fPIC -shared -I"$CUDA_INC" "$REPO/test/cpp/fake_libcuda.cc" -o "$SAN_DIR/test/libfakecuda.so"
# Modules, contexts and bound slots live for the whole process by design: no leak check.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# The programs live outside the install tree: point them at the build's images.
AOTRITON_IMAGE_DIR="$BUILD_DIR/kernels/images" AOTRITON_BUILD_DIR="$SAN_DIR" "$PYTHON" -m pytest -q test/cpu/test_runtime_nogpu.py test/cpu/test_runtime_fake_driver.py \
  -k "not python_binding and not torch" "$@"
