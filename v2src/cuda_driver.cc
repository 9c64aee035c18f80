#include "cuda_driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

namespace {

// The oldest driver API version whose entry points we ask for (CUDA 12.0).
constexpr int kDriverApiVersion = 12000;

struct Loaded {
  CudaDriver driver;
  Status status = Status::kSuccess;
  std::string message;
};

Loaded load_driver() {
  Loaded r;
  const char* path = std::getenv("AOTRITON_LIBCUDA");
  if (!path || !*path) path = "libcuda.so.1";
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    r.status = Status::kNoDriver;
    const char* why = dlerror();
    r.message = std::string("cannot load the CUDA driver (") + path + "): " + (why ? why : "unknown") +
                ". Is an NVIDIA driver installed?";
    return r;
  }
  using InitFn = CUresult (*)(unsigned int);
  using VersionFn = CUresult (*)(int*);
  using ProcFn = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto version = reinterpret_cast<VersionFn>(dlsym(lib, "cuDriverGetVersion"));
  auto proc = reinterpret_cast<ProcFn>(dlsym(lib, "cuGetProcAddress_v2"));
  if (!init || !version || !proc) {
    r.status = Status::kNoDriver;
    r.message = std::string(path) + " lacks cuInit/cuDriverGetVersion/cuGetProcAddress_v2 (driver older than CUDA 12)";
    return r;
  }
  int v = 0;
  if (version(&v) != CUDA_SUCCESS || v < kDriverApiVersion) {
    r.status = Status::kNoDriver;
    r.message = "CUDA driver version " + std::to_string(v) + " is older than the required 12000";
    return r;
  }
  CUresult init_result = init(0);
  if (init_result != CUDA_SUCCESS) {
    r.status = Status::kNoDriver;
    r.message = "cuInit failed with CUresult " + std::to_string(static_cast<int>(init_result)) +
                " (no usable GPU or driver/library mismatch)";
    return r;
  }
  auto resolve = [&](const char* name, void** slot) {
    CUdriverProcAddressQueryResult q{};
    if (proc(name, slot, kDriverApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &q) != CUDA_SUCCESS || !*slot) {
      r.status = Status::kNoDriver;
      r.message = std::string("CUDA driver lacks ") + name;
    }
  };
#define AOTRITON_DRIVER_FN(name) resolve(#name, reinterpret_cast<void**>(&r.driver.name));
#include "cuda_driver_functions.inc"
#undef AOTRITON_DRIVER_FN
  CUdriverProcAddressQueryResult q{};
  void* ctx_id = nullptr;
  if (proc("cuCtxGetId", &ctx_id, kDriverApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &q) == CUDA_SUCCESS && ctx_id)
    r.driver.cuCtxGetId = reinterpret_cast<decltype(r.driver.cuCtxGetId)>(ctx_id);
  void* encode = nullptr;
  if (proc("cuTensorMapEncodeTiled", &encode, kDriverApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &q) == CUDA_SUCCESS &&
      encode)
    r.driver.cuTensorMapEncodeTiled = reinterpret_cast<decltype(r.driver.cuTensorMapEncodeTiled)>(encode);
  auto optional = [&](const char* name, void** slot) {
    if (proc(name, slot, kDriverApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &q) != CUDA_SUCCESS) *slot = nullptr;
  };
  optional("cuDeviceGet", reinterpret_cast<void**>(&r.driver.cuDeviceGet));
  optional("cuDevicePrimaryCtxRetain", reinterpret_cast<void**>(&r.driver.cuDevicePrimaryCtxRetain));
  optional("cuCtxSetCurrent", reinterpret_cast<void**>(&r.driver.cuCtxSetCurrent));
  return r;
}

}  // namespace

Status cuda_driver(const CudaDriver** out) {
  static const Loaded loaded = load_driver();  // thread-safe static init
  if (loaded.status != Status::kSuccess) return fail(loaded.status, loaded.message);
  *out = &loaded.driver;
  return Status::kSuccess;
}

Status check_cu(const CudaDriver& cu, CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return Status::kSuccess;
  const char* text = nullptr;
  if (cu.cuGetErrorString(result, &text) != CUDA_SUCCESS || !text) text = "unknown error";
  Status s = result == CUDA_ERROR_OUT_OF_MEMORY ? Status::kOutOfMemory : Status::kDriverError;
  return fail(s, std::string(what) + " failed: " + text + " (CUresult " + std::to_string(static_cast<int>(result)) + ")");
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
