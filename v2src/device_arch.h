// The compute capability and SM count of the GPU a stream runs on, for
// operators that choose between kernels by arch (e.g. the sm_90 flash forward)
// and size persistent grids.
#pragma once
#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// major * 10 + minor of the device of the stream's context (the current
// context for the default stream). Cached per context: after the first call
// in a context it costs three driver queries and no lock.
Status device_arch(Stream stream, int* arch);

// Both the arch and the SM count (a persistent kernel's grid) in one lookup.
Status device_info(Stream stream, int* arch, int* sms);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
