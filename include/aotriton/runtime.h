// Library-wide types and settings: version, dtypes, tensor views, streams,
// where the kernel images live.
#pragma once
#include <array>
#include <cstdint>

#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

// Version of the library actually linked (compare with AOTRITON_VERSION_*).
AOTRITON_API const char* version() noexcept;
// What this build holds: profile name, ';'-separated target archs and kernels.
AOTRITON_API const char* build_profile() noexcept;
AOTRITON_API const char* build_archs() noexcept;
AOTRITON_API const char* build_kernels() noexcept;

enum class DType : int32_t {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat8E4M3 = 3,
  kInt8 = 4,
  kUInt8 = 5,
  kInt32 = 6,
  kInt64 = 7,
};
AOTRITON_API const char* dtype_name(DType d) noexcept;
AOTRITON_API int dtype_size(DType d) noexcept;

// A non-owning view of a device tensor: element strides, any layout.
template <int Rank>
struct TensorView {
  void* data = nullptr;
  std::array<int64_t, Rank> sizes{};
  std::array<int64_t, Rank> strides{};
  DType dtype = DType::kFloat16;

  int64_t size(int i) const { return sizes[i]; }
  int64_t stride(int i) const { return strides[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : sizes) n *= s;
    return n;
  }
};

// A CUDA stream (a CUstream / cudaStream_t); nullptr is the legacy default
// stream of the current context.
struct Stream {
  void* handle = nullptr;
};

// Per-call knobs shared by every operator.
struct KernelOptions {
  // Run this tuning config (its name, e.g. "BLOCK=1024,num_stages=1,num_warps=4")
  // instead of the tuned choice; it must be in the build (profile "tune" has all).
  const char* force_config = nullptr;
  // If non-null, receives the name of the config that ran (static storage).
  const char** ran_config = nullptr;
};

// Makes CUDA device `ordinal`'s primary context current in the calling thread
// when no context is current there (as cudaSetDevice would), so that calls on
// the default stream work in threads the CUDA runtime has not touched yet
// (e.g. PyTorch's autograd worker threads, which set no device until needed).
// Does nothing when a context is already current.
AOTRITON_API Status ensure_current_device(int ordinal) noexcept;

// Directory holding sm_XX/<kernel>/<functional>.aks. Looked up, in order:
// set_image_dir(), $AOTRITON_IMAGE_DIR, aotriton.images next to the binary
// that contains libaotriton (or ../lib/aotriton.images from it), then the
// install prefix baked in at build time. Pass nullptr to go back to lookup.
AOTRITON_API Status set_image_dir(const char* path) noexcept;
// The directory in use (resolving it if needed); empty string if none found.
AOTRITON_API const char* image_dir() noexcept;

// Preloading, for CUDA graph capture. Modules load lazily on a functional's
// first use in a context (the load itself runs in relaxed stream-capture mode,
// so a first call inside a capture does not invalidate it). With
// set_load_all_configs(true), that first use loads every tuning config of the
// functional, not only the one the call picks: run each functional once this
// way (aotriton.preload() in Python does) and later calls of any size never
// load a module. Process-wide; off by default.
AOTRITON_API void set_load_all_configs(bool on) noexcept;
AOTRITON_API bool load_all_configs() noexcept;

// Programmatic dependent launch (sm_90+). The short kernels of decode chains
// (MoE routing, alignment, quantization, activation, grouped GEMMs, moe_sum;
// KV-cache append, attention and its split combine) may then start while the
// kernel before them in the stream is finishing, each waiting on the GPU for its
// predecessor's results (griddepcontrol.wait), which hides one launch latency per
// kernel; CUDA graphs keep it. Results are the same either way. Process-wide; on
// unless the environment sets AOTRITON_PDL=0 at start-up (H200: 3-8 us less per
// fused_experts call, docs/performance.md). No effect before sm_90.
AOTRITON_API void set_programmatic_dependent_launch(bool on) noexcept;
AOTRITON_API bool programmatic_dependent_launch() noexcept;

// Number of cubin modules loaded so far (all devices); tests use it to prove
// each (kernel config, context) is loaded once.
AOTRITON_API uint64_t module_load_count() noexcept;

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
