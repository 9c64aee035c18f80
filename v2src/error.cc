#include "error.h"

#include <string>

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

namespace {
thread_local std::string t_last_message;
thread_local std::string t_error_string;
}  // namespace

namespace detail {
Status fail(Status status, std::string message) {
  t_last_message = std::move(message);
  return status;
}
void clear_error() noexcept { t_last_message.clear(); }
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

const char* last_error_message() noexcept { return t_last_message.c_str(); }

const char* error_string(Status s) noexcept {
  try {
    t_error_string = status_name(s);
    if (s != Status::kSuccess && !t_last_message.empty()) t_error_string += ": " + t_last_message;
    return t_error_string.c_str();
  } catch (...) {
    return status_name(s);
  }
}

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
