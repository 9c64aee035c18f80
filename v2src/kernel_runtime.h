// Internal runtime behind every generated launcher: per-context lazy module
// loading from the image store, tuning-config choice, and the launch itself.
//
// Fast path (module already loaded in the stream's context): three driver
// queries for the context (current, stream's, its id), a lock-free walk of a
// short list, one atomic load, cuLaunchKernel. No allocation, no
// synchronisation: graph capture safe.
#pragma once
#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aotriton/runtime.h"
#include "cuda_driver.h"
#include "image_store.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

class ImageStore;

// The configs of one functional compiled for one arch, and its tuning LUT.
struct ArchVariant {
  uint32_t arch;                      // 80, 90, ...
  uint32_t n_configs;
  const char* const* config_names;    // names as stored in the image
  const uint16_t* lut;                // config index per autotune-bin combination
  uint32_t lut_size;
};

struct LoadedKernel {
  CUfunction function;
  uint32_t shared_bytes;
  uint32_t block_threads;
};

// State of one functional in one CUDA context. Never freed: CUDA modules are
// kept for the life of the process. A context is known by its handle and its
// unique id (cuCtxGetId): a handle that comes back for a new context after the
// old one was destroyed gets a new BoundSlot, and its modules are loaded again.
struct BoundSlot {
  CUcontext context;
  uint64_t context_id;  // 0 when the driver has no cuCtxGetId
  const ArchVariant* variant;
  std::unique_ptr<std::atomic<const LoadedKernel*>[]> kernels;
  BoundSlot* next;
  bool use_ptx = false;  // GPU newer than every built arch: JIT the variant's PTX
  // Without cuCtxGetId: set when a launch finds the module gone (the context
  // was destroyed), so that the next call binds afresh and reloads.
  std::atomic<bool> stale{false};
};

// A store that failed to open (missing, corrupt, incompatible): remembered so
// that later calls fail at once with the same status and message instead of
// reading and inflating it again under the lock. Retried when the image
// directory or its generation (set_image_dir) changes.
struct StoreFailure {
  Status status = Status::kSuccess;
  std::string message;
  std::string dir;
  uint64_t generation = 0;
};

struct SlotState {
  std::atomic<BoundSlot*> head{nullptr};
  std::mutex mutex;  // taken only to load
  std::vector<std::unique_ptr<ImageStore>> stores;  // per variant, decompressed once per process
  std::vector<StoreFailure> store_failures;         // per variant
  ~SlotState();
};

// One compiled functional of one kernel (generated, one per functional).
struct FunctionalSlot {
  const char* kernel;
  const char* functional;  // also the image file stem
  const ArchVariant* variants;
  uint32_t n_variants;
  SlotState* state;
};

// Where a launch goes: driver, the stream's context, whether it must be
// pushed (it is not current), and the functional's state in that context.
struct LaunchTarget {
  const CudaDriver* cu;
  CUcontext context;
  uint64_t context_id;
  bool push;
  BoundSlot* bound;
};

// PTX fallback (AOTRITON_PTX_FALLBACK): the images of this arch also hold
// each config's PTX as "<config>@ptx"; a GPU newer than every built arch JITs
// it. 0 when the build kept no PTX. Defined in the generated build_info.cc.
extern const uint32_t kPtxFallbackArch;

Status bind(const FunctionalSlot& slot, void* stream, LaunchTarget* out);

// Picks the config: options->force_config by name, else the LUT entry.
Status choose_config(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t lut_index,
                     const KernelOptions* options, uint32_t* config);

Status kernel_for(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t config,
                  const LoadedKernel** out);

// Grid entries of 0 launch nothing. params must end with the two scratch
// pointer slots Triton 3.6 kernels take. pdl: the kernel waits for its
// predecessors itself (kernel_rules.Kernel.pdl), so on sm_90+ and when
// programmatic_dependent_launch() is on it is launched as a programmatic
// dependent (cuLaunchKernelEx).
Status launch(const LaunchTarget& t, const LoadedKernel& k, const uint32_t grid[3], void** params,
              void* stream, const char* kernel_name, bool pdl = false);

// Index of `value` among ascending upper bounds (last bin catches the rest).
inline uint32_t bin_index(int64_t value, const int64_t* bounds, uint32_t n) {
  for (uint32_t i = 0; i + 1 < n; ++i)
    if (value <= bounds[i]) return i;
  return n - 1;
}

// Grid dimension from a 64-bit expression, rejecting what CUDA cannot launch.
Status grid_dim(int64_t value, int axis, const char* kernel_name, uint32_t* out);

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Grid expressions of the rules may also use these (python/jit_launch.py has the same three).
inline int64_t grid_min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t select(bool cond, int64_t a, int64_t b) { return cond ? a : b; }

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
