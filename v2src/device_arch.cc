#include "device_arch.h"

#include <atomic>
#include <mutex>
#include <string>

#include "cuda_driver.h"
#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

namespace {

// Append-only (context, arch, SM count) entries; a context is known by its
// unique id where the driver has cuCtxGetId, else by its handle.
struct Known {
  std::atomic<uint64_t> key{0};
  std::atomic<int> arch{0};
  std::atomic<int> sms{0};
};
constexpr int kCapacity = 64;
Known g_known[kCapacity];
std::atomic<int> g_count{0};
std::mutex g_mutex;

}  // namespace

Status device_info(Stream stream, int* arch, int* sms) {
  const CudaDriver* cu;
  AOTRITON_RETURN_IF_ERROR(cuda_driver(&cu));
  CUcontext ctx = nullptr;
  if (stream.handle) {
    AOTRITON_RETURN_IF_ERROR(check_cu(*cu, cu->cuStreamGetCtx(static_cast<CUstream>(stream.handle), &ctx),
                                      "cuStreamGetCtx"));
  } else {
    AOTRITON_RETURN_IF_ERROR(check_cu(*cu, cu->cuCtxGetCurrent(&ctx), "cuCtxGetCurrent"));
    if (!ctx)
      return fail(Status::kInvalidArgument,
                  "no current CUDA context for the default stream: make a device current (cudaSetDevice) first");
  }
  uint64_t key = reinterpret_cast<uintptr_t>(ctx);
  if (cu->cuCtxGetId) {
    unsigned long long id = 0;
    AOTRITON_RETURN_IF_ERROR(check_cu(*cu, cu->cuCtxGetId(ctx, &id), "cuCtxGetId"));
    key = id;
  }
  const int n = g_count.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (g_known[i].key.load(std::memory_order_relaxed) == key) {
      *arch = g_known[i].arch.load(std::memory_order_relaxed);
      *sms = g_known[i].sms.load(std::memory_order_relaxed);
      return Status::kSuccess;
    }
  // First call in this context: ask its device (the context need not be current).
  CUcontext current = nullptr;
  AOTRITON_RETURN_IF_ERROR(check_cu(*cu, cu->cuCtxGetCurrent(&current), "cuCtxGetCurrent"));
  const bool push = current != ctx;
  if (push) AOTRITON_RETURN_IF_ERROR(check_cu(*cu, cu->cuCtxPushCurrent(ctx), "cuCtxPushCurrent"));
  CUdevice dev;
  int major = 0, minor = 0;
  CUresult r = cu->cuCtxGetDevice(&dev);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
  if (r == CUDA_SUCCESS) r = cu->cuDeviceGetAttribute(sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
  if (push) {
    CUcontext popped;
    cu->cuCtxPopCurrent(&popped);
  }
  AOTRITON_RETURN_IF_ERROR(check_cu(*cu, r, "querying the device's compute capability and SM count"));
  *arch = major * 10 + minor;
  std::lock_guard<std::mutex> lock(g_mutex);
  const int m = g_count.load(std::memory_order_relaxed);
  if (m < kCapacity) {  // past capacity: correct, only not cached
    g_known[m].key.store(key, std::memory_order_relaxed);
    g_known[m].arch.store(*arch, std::memory_order_relaxed);
    g_known[m].sms.store(*sms, std::memory_order_relaxed);
    g_count.store(m + 1, std::memory_order_release);
  }
  return Status::kSuccess;
}

Status device_arch(Stream stream, int* arch) {
  int sms;
  return device_info(stream, arch, &sms);
}

}  // namespace detail

Status ensure_current_device(int ordinal) noexcept try {
  detail::clear_error();
  const detail::CudaDriver* cu;
  AOTRITON_RETURN_IF_ERROR(detail::cuda_driver(&cu));
  CUcontext current = nullptr;
  AOTRITON_RETURN_IF_ERROR(detail::check_cu(*cu, cu->cuCtxGetCurrent(&current), "cuCtxGetCurrent"));
  if (current) return Status::kSuccess;
  if (!cu->cuDeviceGet || !cu->cuDevicePrimaryCtxRetain || !cu->cuCtxSetCurrent)
    return detail::fail(Status::kNoDriver, "ensure_current_device: the CUDA driver lacks cuDeviceGet / "
                                           "cuDevicePrimaryCtxRetain / cuCtxSetCurrent");
  CUdevice dev;
  AOTRITON_RETURN_IF_ERROR(detail::check_cu(*cu, cu->cuDeviceGet(&dev, ordinal), "cuDeviceGet"));
  // The primary context, as the CUDA runtime uses; the reference is kept (the
  // runtime keeps its own until exit too), so the context outlives this call.
  CUcontext primary = nullptr;
  AOTRITON_RETURN_IF_ERROR(
      detail::check_cu(*cu, cu->cuDevicePrimaryCtxRetain(&primary, dev), "cuDevicePrimaryCtxRetain"));
  return detail::check_cu(*cu, cu->cuCtxSetCurrent(primary), "cuCtxSetCurrent");
} catch (...) {
  return detail::fail_exception("ensure_current_device: unexpected exception");
}

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
