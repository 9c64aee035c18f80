// What the generated Inputs structs are made of (python/codegen_inputs.py):
// each kernel's Inputs names everything it takes, and its make_args fills
// the kernel's Args from them, so operators never fill Args by hand.
#pragma once
#include <cstdint>

#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// A value the caller must give. It has no default constructor, so a field
// of an Inputs struct left out of its initializer is a compile error rather
// than a silent zero.
template <class T>
struct Required {
  Required(T v) : value(v) {}  // NOLINT: implicit on purpose (`.sm_scale = scale`)
  T value;
};

// A tensor in a kernel's terms: its pointer and the strides (in elements) of
// the dims the kernel's rule names, in the rule's order (python/rules_*.py,
// Tensor(..., dims="zhm")).
template <int N>
struct KernelTensor {
  const void* ptr;
  int64_t strides[N];
};

// strided(p, stride_m) or strided(p, z, h, m): a KernelTensor from a pointer
// and its strides in the rule's order. Tensors whose rule takes no stride
// are plain `const void*` fields.
template <class... S>
KernelTensor<sizeof...(S)> strided(const void* ptr, S... strides) {
  return {ptr, {static_cast<int64_t>(strides)...}};
}

// Narrows an integer to its kernel argument's type; out of range is
// kInvalidArgument naming the kernel and argument.
Status narrow_arg(const char* kernel, const char* arg, int64_t value, int32_t* out);
Status narrow_arg(const char* kernel, const char* arg, int64_t value, uint32_t* out);
Status narrow_arg(const char* kernel, const char* arg, int64_t value, uint64_t* out);
inline Status narrow_arg(const char*, const char*, int64_t value, int64_t* out) {
  *out = value;
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
