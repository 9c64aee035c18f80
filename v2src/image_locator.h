// Finds the directory holding the kernel images (see set_image_dir()).
#pragma once
#include <string>

#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// Resolves (and caches) the image directory; kImageNotFound lists every
// place that was tried.
Status locate_image_dir(std::string* out);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
