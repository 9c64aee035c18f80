// Status codes returned by every aotriton entry point.
#pragma once
#include "aotriton/version.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

enum class Status : int {
  kSuccess = 0,
  kInvalidArgument = 1,      // wrong dtype, shape, stride, alignment or null pointer
  kUnsupported = 2,          // valid request this library cannot serve (e.g. head dim > 256)
  kNotInBuild = 3,           // functional or kernel not compiled into this build/profile
  kArchNotInBuild = 4,       // GPU architecture missing from the image store
  kImageNotFound = 5,        // image directory or file missing
  kCorruptImage = 6,         // bad magic, version, checksum, truncated or undecodable store
  kNoDriver = 7,             // libcuda could not be loaded or is too old
  kDriverError = 8,          // a CUDA driver call failed
  kOutOfMemory = 9,
  kInternal = 10,
  kIncompatibleImage = 11,   // image store of another format or library ABI version
};

// Short static description of a status code.
AOTRITON_API const char* status_name(Status s) noexcept;

// Detailed message for the last error raised on the calling thread (names the
// argument, kernel, functional, file, ...). Empty after a success.
AOTRITON_API const char* last_error_message() noexcept;

// status_name plus, when available, the calling thread's last error message.
AOTRITON_API const char* error_string(Status s) noexcept;

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
