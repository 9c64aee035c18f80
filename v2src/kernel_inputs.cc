#include "kernel_inputs.h"

#include <limits>
#include <string>

#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

namespace {

template <class T>
Status narrow(const char* kernel, const char* arg, int64_t value, T* out) {
  const bool fits = std::numeric_limits<T>::is_signed
                        ? value >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                              value <= static_cast<int64_t>(std::numeric_limits<T>::max())
                        : value >= 0 && static_cast<uint64_t>(value) <= std::numeric_limits<T>::max();
  if (!fits)
    return fail(Status::kInvalidArgument, std::string(kernel) + ": " + arg + " = " + std::to_string(value) +
                                              " does not fit the kernel's " + std::to_string(8 * sizeof(T)) +
                                              "-bit argument");
  *out = static_cast<T>(value);
  return Status::kSuccess;
}

}  // namespace

Status narrow_arg(const char* kernel, const char* arg, int64_t value, int32_t* out) {
  return narrow(kernel, arg, value, out);
}
Status narrow_arg(const char* kernel, const char* arg, int64_t value, uint32_t* out) {
  return narrow(kernel, arg, value, out);
}
Status narrow_arg(const char* kernel, const char* arg, int64_t value, uint64_t* out) {
  return narrow(kernel, arg, value, out);
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
