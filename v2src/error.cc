#include "error.h"

#include <new>
#include <string>

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

namespace {
thread_local std::string t_last_message;
thread_local std::string t_error_string;
// Set instead of t_last_message where allocating is not allowed.
thread_local const char* t_static_message = nullptr;
}  // namespace

namespace detail {
Status fail(Status status, std::string message) {
  t_static_message = nullptr;
  t_last_message = std::move(message);
  return status;
}
void clear_error() noexcept {
  t_static_message = nullptr;
  t_last_message.clear();
}
Status fail_exception(const char* what) noexcept {
  t_last_message.clear();  // keeps its buffer: no allocation
  try {
    throw;
  } catch (const std::bad_alloc&) {
    t_static_message = "out of memory (std::bad_alloc)";
    return Status::kOutOfMemory;
  } catch (...) {
    t_static_message = what;
    return Status::kInternal;
  }
}
}  // namespace detail

const char* status_name(Status s) noexcept {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kUnsupported: return "unsupported";
    case Status::kNotInBuild: return "not in this build";
    case Status::kArchNotInBuild: return "GPU architecture not in this build";
    case Status::kImageNotFound: return "kernel image not found";
    case Status::kCorruptImage: return "corrupt kernel image";
    case Status::kNoDriver: return "CUDA driver not available";
    case Status::kDriverError: return "CUDA driver error";
    case Status::kOutOfMemory: return "out of memory";
    case Status::kInternal: return "internal error";
    case Status::kIncompatibleImage: return "incompatible kernel image";
  }
  return "unknown status";
}

const char* last_error_message() noexcept { return t_static_message ? t_static_message : t_last_message.c_str(); }

const char* error_string(Status s) noexcept {
  try {
    const char* message = last_error_message();
    t_error_string = status_name(s);
    if (s != Status::kSuccess && *message) t_error_string.append(": ").append(message);
    return t_error_string.c_str();
  } catch (...) {
    return status_name(s);
  }
}

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
