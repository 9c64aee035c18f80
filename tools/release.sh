#!/usr/bin/env bash
# Make the binary release tarball in one command:
#   aotriton-<version>-cuda<x.y>-<archs>-<profile>.tar.xz
# holding lib/libaotriton.a, lib/libaotriton.so*, include/aotriton,
# lib/cmake/aotriton, lib/aotriton.images, lib/python (extension + torch
# package; not the torch C++ fast path, which would tie the tarball to one
# torch build and embed that torch's header paths), lib/aotriton.tools, LICENSE, CHANGELOG.md, README.md and a MANIFEST
# (version, ABI and image format versions, archs, profile, triton and CUDA
# versions, commit, sha256 of every file). Byte-reproducible: the same commit
# gives the same tarball in any directory (tools/make_release.py packs it).
#   AOTRITON_PROFILE       default release
#   AOTRITON_TARGET_ARCH   default 80;90 (a release names its archs: no GPU detection)
#   AOTRITON_TRITON_CACHE_DIR  reuse a Triton cache (default: inside the build dir)
#   BUILD_DIR              default build/release-<profile>-<archs>
#   OUT_DIR                where the tarball goes (default dist/)
#   PYTHON                 interpreter with triton==3.6.0 and nanobind (default .venv/bin/python)
#   CMAKE_ARGS             extra cmake arguments
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PROFILE=${AOTRITON_PROFILE:-release}
ARCHS=${AOTRITON_TARGET_ARCH:-80;90}
ARCH_TAG=$(echo "$ARCHS" | tr ',;' '  ' | xargs -n1 | sort -n | sed 's/^/sm/' | paste -sd_)
BUILD_DIR=${BUILD_DIR:-$REPO/build/release-$PROFILE-$ARCH_TAG}
OUT_DIR=${OUT_DIR:-$REPO/dist}
PYTHON=$(command -v "${PYTHON:-$REPO/.venv/bin/python}")
export PATH="$(dirname "$PYTHON"):$PATH"
STAGE=$BUILD_DIR/stage
t0=$(date +%s)
cmake -S "$REPO" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DAOTRITON_PROFILE="$PROFILE" -DAOTRITON_TARGET_ARCH="$ARCHS" \
  -DAOTRITON_SHARED=ON -DAOTRITON_BUILD_TESTS=OFF -DAOTRITON_EMBED_INSTALL_PREFIX=OFF \
  -DAOTRITON_BUILD_TORCH_EXT=OFF \
  -DAOTRITON_TRITON_CACHE_DIR="${AOTRITON_TRITON_CACHE_DIR:-}" \
  -DAOTRITON_PYTHON="$PYTHON" -DPython_EXECUTABLE="$PYTHON" -DPython3_EXECUTABLE="$PYTHON" \
  -DCMAKE_INSTALL_PREFIX="$STAGE" ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR"
rm -rf "$STAGE"
cmake --install "$BUILD_DIR" --strip
cp LICENSE CHANGELOG.md README.md "$STAGE/"
COMMIT=${AOTRITON_COMMIT:-$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)}
if [ -z "${AOTRITON_COMMIT:-}" ] && [ "$COMMIT" != unknown ] && [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
  COMMIT="$COMMIT-dirty"
fi
# Fixed timestamps: the commit's time (SOURCE_DATE_EPOCH wins when set).
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}
"$PYTHON" "$REPO/tools/make_release.py" --stage "$STAGE" --out-dir "$OUT_DIR" \
  --commit "$COMMIT" --mtime "$EPOCH" --arch-tag "$ARCH_TAG"
echo "release: $(( $(date +%s) - t0 )) s"
