// Internal: record a detailed, thread-local error message next to a Status.
#pragma once
#include <string>
#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// Stores `message` as the calling thread's last error and returns `status`,
// so failures read: `return fail(Status::kInvalidArgument, "q: ...");`
Status fail(Status status, std::string message);

// Clears the calling thread's last error (called on entry of public calls).
void clear_error() noexcept;

// For catch (...) handlers of noexcept entry points: records a static message
// without allocating (an allocation there could throw and terminate), as
// kOutOfMemory for std::bad_alloc and kInternal with `what` otherwise. Call
// only inside a catch handler.
Status fail_exception(const char* what) noexcept;

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton

// Propagate a non-success status.
#define AOTRITON_RETURN_IF_ERROR(expr)                           \
  do {                                                           \
    ::aotriton::Status _aotriton_s = (expr);                     \
    if (_aotriton_s != ::aotriton::Status::kSuccess) return _aotriton_s; \
  } while (0)
