#!/usr/bin/env bash
# Build and install aotriton: makes .venv (pinned requirements + CPU torch for
# the tests) if there is none, then configures, compiles every kernel of the
# profile and installs to $PREFIX.
#   AOTRITON_PROFILE   ci | release | tune          (default release)
#   AOTRITON_TARGET_ARCH  e.g. "80;90;100;120"      (default: the GPUs present, else "80;90")
#   PREFIX             install prefix               (default ./install)
#   BUILD_DIR          build directory              (default ./build)
#   PYTHON             interpreter to use instead of .venv (must have triton==3.6.0)
#   CMAKE_ARGS         extra cmake arguments (e.g. -DLIBLZMA_INCLUDE_DIR=...)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${AOTRITON_PROFILE:-release}
ARCH_ARG=()
[ -n "${AOTRITON_TARGET_ARCH:-}" ] && ARCH_ARG=(-DAOTRITON_TARGET_ARCH="$AOTRITON_TARGET_ARCH")
PREFIX=${PREFIX:-$PWD/install}
BUILD_DIR=${BUILD_DIR:-$PWD/build}
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    # CPU torch: the interpreter tests and the Python package's torch layer.
    .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  fi
  PYTHON=$PWD/.venv/bin/python
fi
PYTHON=$(command -v "$PYTHON")  # absolute: CMake caches it
export PATH="$(dirname "$PYTHON"):$PATH"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DAOTRITON_PROFILE="$PROFILE" "${ARCH_ARG[@]}" \
  -DAOTRITON_PYTHON="$PYTHON" -DPython_EXECUTABLE="$PYTHON" -DPython3_EXECUTABLE="$PYTHON" \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" --target install
echo "aotriton installed in $PREFIX (profile $PROFILE, archs $(sed -n 's/^AOTRITON_TARGET_ARCH:STRING=//p' "$BUILD_DIR/CMakeCache.txt"))"
