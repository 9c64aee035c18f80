#!/usr/bin/env bash
# Fuzz the image store reader (v2src/image_store.cc) under ASan+UBSan.
#   tools/fuzz_store.sh [-runs=N] [more fuzzer arguments]
# Engine: clang's libFuzzer when clang++ can link -fsanitize=fuzzer (Debian:
# apt-get install clang libclang-rt-14-dev), else test/fuzz/store_fuzz_driver.cc
# with g++ (deterministic: same -runs/-seed, same inputs). FUZZ_ENGINE=libfuzzer
# or driver forces one. Builds into $FUZZ_DIR (default build/fuzz); seeds come
# from test/fuzz/make_seeds.py plus the smallest stores of $BUILD_DIR. A crash
# leaves the input in $FUZZ_DIR (crash-* for libFuzzer,
# store_fuzz_crash_input.aks for the driver with STORE_FUZZ_SAVE_INPUT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# make_seeds.py imports the test suite's fixtures (needs pytest): prefer the project venv.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=$PWD/.venv/bin/python
fi
BUILD_DIR=${BUILD_DIR:-$REPO/build}
FUZZ_DIR=${FUZZ_DIR:-$BUILD_DIR/fuzz}
mkdir -p "$FUZZ_DIR/gen/aotriton"
sed -e 's/@PROJECT_VERSION_MAJOR@/0/; s/@PROJECT_VERSION_MINOR@/0/; s/@PROJECT_VERSION_PATCH@/0/' \
    -e 's/@PROJECT_VERSION@/0.0.0/' \
    -e "s/@AOTRITON_ABI_VERSION@/$(sed -n 's/^set(AOTRITON_ABI_VERSION \([0-9]*\)).*/\1/p' CMakeLists.txt)/g" \
    include/aotriton/version.h.in > "$FUZZ_DIR/gen/aotriton/version.h.new"
cmp -s "$FUZZ_DIR/gen/aotriton/version.h.new" "$FUZZ_DIR/gen/aotriton/version.h" ||
  mv "$FUZZ_DIR/gen/aotriton/version.h.new" "$FUZZ_DIR/gen/aotriton/version.h"

SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
FLAGS=(-std=c++17 -O1 -g -Wall -Wextra -I"$REPO/include" -I"$FUZZ_DIR/gen" -I"$REPO/v2src" -I"$REPO/test/fuzz")
SOURCES=(v2src/image_store.cc v2src/error.cc test/fuzz/store_mutator.cc test/fuzz/store_fuzz_target.cc)

engine=${FUZZ_ENGINE:-}
CLANG=$(command -v clang++ || command -v clang++-14 || command -v clang++-16 || true)
if [ -z "$engine" ]; then
  engine=driver
  if [ -n "$CLANG" ] && echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
      "$CLANG" -x c++ -fsanitize=fuzzer,address,undefined - -o "$FUZZ_DIR/probe" 2>/dev/null; then
    engine=libfuzzer
  fi
fi
if [ "$engine" = libfuzzer ]; then
  CXX=$CLANG
  SAN=(-fsanitize=fuzzer-no-link "${SAN[@]}")
  LINK=(-fsanitize=fuzzer)
else
  CXX=${CXX:-g++}
  SOURCES+=(test/fuzz/store_fuzz_driver.cc)
  LINK=()
fi
exe="$FUZZ_DIR/store_fuzz_$engine"
# Compile the sources in parallel (2-core CI), then link; skip when up to date.
objs=()
pids=()
for src in "${SOURCES[@]}"; do
  obj="$FUZZ_DIR/$engine-$(basename "$src" .cc).o"
  objs+=("$obj")
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ v2src/image_store.h -nt "$obj" ] ||
     [ test/fuzz/store_mutator.h -nt "$obj" ] || [ "$FUZZ_DIR/gen/aotriton/version.h" -nt "$obj" ]; then
    "$CXX" "${FLAGS[@]}" "${SAN[@]}" -c "$src" -o "$obj" & pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" "${SAN[@]}" "${LINK[@]}" "${objs[@]}" -llzma -o "$exe"

seeds="$FUZZ_DIR/seeds"
rm -rf "$seeds" "$FUZZ_DIR/corpus"
"$PYTHON" test/fuzz/make_seeds.py "$seeds" "$BUILD_DIR/kernels/images"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
echo "store fuzzer: engine $engine ($CXX), seeds in $seeds"
cd "$FUZZ_DIR"
if [ "$engine" = libfuzzer ]; then
  mkdir -p corpus
  exec "$exe" -max_len=1048576 -seed=1 -print_final_stats=1 "$@" corpus "$seeds"
else
  exec "$exe" "$@" "$seeds"
fi
