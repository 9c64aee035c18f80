// The CUDA driver, opened with dlopen at first use: the library has no
// link-time dependency on libcuda, so it loads (and reports a clear error)
// on machines without a GPU driver.
#pragma once
#include <cuda.h>

#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

struct CudaDriver {
#define AOTRITON_DRIVER_FN(name) decltype(&::name) name = nullptr;
#include "cuda_driver_functions.inc"
#undef AOTRITON_DRIVER_FN
  // Optional (null when the driver lacks it): a context's unique id, which a
  // context created after another was destroyed never shares, even when it
  // gets the same CUcontext handle back.
  decltype(&::cuCtxGetId) cuCtxGetId = nullptr;
  // Optional: host-side TMA descriptors (kernels with TmaArg arguments).
  decltype(&::cuTensorMapEncodeTiled) cuTensorMapEncodeTiled = nullptr;
  // Optional too (ensure_current_device): null where the driver lacks them.
  decltype(&::cuDeviceGet) cuDeviceGet = nullptr;
  decltype(&::cuDevicePrimaryCtxRetain) cuDevicePrimaryCtxRetain = nullptr;
  decltype(&::cuCtxSetCurrent) cuCtxSetCurrent = nullptr;
};

// Loads libcuda once per process (thread-safe) and returns the entry points.
// Fails with kNoDriver when libcuda.so.1 is missing or too old. The
// environment variable AOTRITON_LIBCUDA overrides the library path (tests use
// it to simulate a machine without a driver).
Status cuda_driver(const CudaDriver** out);

// Converts a failed CUresult into kDriverError with `what` and the driver's
// own message; returns kSuccess for CUDA_SUCCESS.
Status check_cu(const CudaDriver& cu, CUresult result, const char* what);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
