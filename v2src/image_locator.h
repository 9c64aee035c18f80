// Finds the directory holding the kernel images (see set_image_dir()).
#pragma once
#include <cstdint>
#include <string>

#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// Resolves (and caches) the image directory; kImageNotFound lists every
// place that was tried.
Status locate_image_dir(std::string* out);

// Bumped by every set_image_dir() call: remembered store failures (see
// kernel_runtime.cc) are retried after it, even for the same directory.
uint64_t image_dir_generation() noexcept;

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
