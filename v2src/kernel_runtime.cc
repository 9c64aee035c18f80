#include "kernel_runtime.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "error.h"
#include "image_locator.h"
#include "image_store.h"
#include "plain_launch.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

namespace {
std::atomic<uint64_t> g_module_loads{0};
std::atomic<bool> g_load_all_configs{false};

// Above this, dynamic shared memory must be opted in per function.
constexpr uint32_t kDefaultSharedLimit = 48 * 1024;
}  // namespace

uint64_t module_load_count() noexcept { return g_module_loads.load(std::memory_order_relaxed); }
void set_load_all_configs(bool on) noexcept { g_load_all_configs.store(on, std::memory_order_relaxed); }
bool load_all_configs() noexcept { return g_load_all_configs.load(std::memory_order_relaxed); }

namespace {
// On unless AOTRITON_PDL=0: measured on the H200 (bench/bench_pdl.py), it saved 3-8 us per
// fused_experts call at 8932bf0; at 31a50f3 3-5 us in 8 of 12 rows, 2-4 us lost in 3, and 97 us
// lost at Mixtral-like bf16 M=64. Where an early start costs, the operator launches that kernel
// plainly (plain_launch.h): fused_experts' GEMMs from 16 slots an expert, its act_and_mul below
// one slot per 16 experts, attn_decode's combine (H100: fused_experts then saves 0.6-6.8 us in
// each of 12 rows, aa09baa + 6d548dc; decode attention 0.7-3.3 us in 7 of 8 rows, fc86f00).
std::atomic<bool> g_pdl{[] {
  const char* v = std::getenv("AOTRITON_PDL");
  return !(v && *v == '0');
}()};
}  // namespace

void set_programmatic_dependent_launch(bool on) noexcept { g_pdl.store(on, std::memory_order_relaxed); }
bool programmatic_dependent_launch() noexcept { return g_pdl.load(std::memory_order_relaxed); }

namespace {
// AOTRITON_PDL_EXCLUDE=name[,name...]: these kernels (rule names, e.g. act_and_mul) launch plainly
// while PDL is on, so a benchmark can tell which early start costs or saves (bench/bench_pdl.py
// --exclude). Read once; empty (the usual case) costs one branch a launch.
const std::vector<std::string>& pdl_excluded() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    const char* v = std::getenv("AOTRITON_PDL_EXCLUDE");
    std::string cur;
    for (const char* c = v ? v : ""; ; ++c) {
      if (*c == ',' || *c == '\0') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
        if (*c == '\0') break;
      } else if (*c != ' ') {
        cur += *c;
      }
    }
    return out;
  }();
  return names;
}

bool pdl_for(const char* kernel_name) {
  const auto& excluded = pdl_excluded();
  if (excluded.empty()) return true;
  for (const auto& n : excluded)
    if (n == kernel_name) return false;
  return true;
}
}  // namespace

namespace detail {

SlotState::~SlotState() = default;

namespace {

// Makes `ctx` current for the scope if it is not already. A failed push must
// stop the caller (else modules load into, and kernels launch in, the wrong
// context): check status() before using the context.
class ContextScope {
 public:
  ContextScope(const CudaDriver* cu, CUcontext ctx, bool push) : cu_(cu) {
    if (push) {
      result_ = cu_->cuCtxPushCurrent(ctx);
      pushed_ = result_ == CUDA_SUCCESS;
    }
  }
  ~ContextScope() {
    CUcontext ignored;
    if (pushed_) cu_->cuCtxPopCurrent(&ignored);
  }
  Status status() const { return check_cu(*cu_, result_, "cuCtxPushCurrent (making the stream's context current)"); }

 private:
  const CudaDriver* cu_;
  bool pushed_ = false;
  CUresult result_ = CUDA_SUCCESS;
};

// Module loading is not a stream operation, but in the default (global)
// capture mode CUDA may refuse it while any stream is capturing; relaxed mode
// for this thread lets a first call inside a capture load its module.
class RelaxedCaptureScope {
 public:
  explicit RelaxedCaptureScope(const CudaDriver* cu) : cu_(cu), mode_(CU_STREAM_CAPTURE_MODE_RELAXED) {
    ok_ = cu_->cuThreadExchangeStreamCaptureMode(&mode_) == CUDA_SUCCESS;
  }
  ~RelaxedCaptureScope() {
    if (ok_) cu_->cuThreadExchangeStreamCaptureMode(&mode_);
  }

 private:
  const CudaDriver* cu_;
  CUstreamCaptureMode mode_;
  bool ok_;
};

// Unloads a module unless it is kept: a kernel whose setup fails after
// cuModuleLoadData must not leak its module.
class ModuleGuard {
 public:
  ModuleGuard(const CudaDriver& cu, CUmodule m) : cu_(cu), module_(m) {}
  ~ModuleGuard() {
    if (module_) cu_.cuModuleUnload(module_);
  }
  void keep() { module_ = nullptr; }

 private:
  const CudaDriver& cu_;
  CUmodule module_;
};

bool same_context(const BoundSlot& b, const LaunchTarget& t) {
  return b.context == t.context && b.context_id == t.context_id && !b.stale.load(std::memory_order_acquire);
}

std::string arch_list(const FunctionalSlot& slot) {
  std::string s;
  for (uint32_t i = 0; i < slot.n_variants; ++i) s += (i ? ", sm_" : "sm_") + std::to_string(slot.variants[i].arch);
  return s;
}

// Highest compiled arch of the device's major version not above the device.
const ArchVariant* pick_variant(const FunctionalSlot& slot, int arch) {
  const ArchVariant* best = nullptr;
  for (uint32_t i = 0; i < slot.n_variants; ++i) {
    const ArchVariant& v = slot.variants[i];
    if (static_cast<int>(v.arch) / 10 == arch / 10 && static_cast<int>(v.arch) <= arch &&
        (!best || v.arch > best->arch))
      best = &v;
  }
  return best;
}

constexpr const char* kPtxSuffix = "@ptx";  // entry name of a config's PTX (see kPtxFallbackArch)

const ArchVariant* pick_ptx_variant(const FunctionalSlot& slot, int arch) {
  if (kPtxFallbackArch == 0) return nullptr;
  const ArchVariant* ptx = nullptr;
  for (uint32_t i = 0; i < slot.n_variants; ++i) {
    if (static_cast<int>(slot.variants[i].arch) >= arch) return nullptr;  // not newer than every built arch
    if (slot.variants[i].arch == kPtxFallbackArch) ptx = &slot.variants[i];
  }
  return ptx;
}

Status bind_slow(const FunctionalSlot& slot, LaunchTarget* t) {
  SlotState& st = *slot.state;
  std::lock_guard<std::mutex> lock(st.mutex);
  for (BoundSlot* b = st.head.load(std::memory_order_acquire); b; b = b->next)
    if (same_context(*b, *t)) {
      t->bound = b;
      return Status::kSuccess;
    }
  const CudaDriver& cu = *t->cu;
  ContextScope scope(t->cu, t->context, t->push);
  AOTRITON_RETURN_IF_ERROR(scope.status());
  CUdevice dev;
  AOTRITON_RETURN_IF_ERROR(check_cu(cu, cu.cuCtxGetDevice(&dev), "cuCtxGetDevice"));
  int major = 0, minor = 0;
  AOTRITON_RETURN_IF_ERROR(check_cu(
      cu, cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute"));
  AOTRITON_RETURN_IF_ERROR(check_cu(
      cu, cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute"));
  int arch = major * 10 + minor;
  const ArchVariant* v = pick_variant(slot, arch);
  const bool use_ptx = !v && (v = pick_ptx_variant(slot, arch)) != nullptr;
  if (!v)
    return fail(Status::kArchNotInBuild, std::string("kernel ") + slot.kernel + " functional " + slot.functional +
                                             ": this build has images for " + arch_list(slot) + ", the GPU is sm_" +
                                             std::to_string(arch) + " (rebuild with AOTRITON_TARGET_ARCH including " +
                                             std::to_string(arch) + ")");
  auto* b = new BoundSlot{t->context, t->context_id, v,
                          std::make_unique<std::atomic<const LoadedKernel*>[]>(v->n_configs),
                          st.head.load(std::memory_order_relaxed), use_ptx};
  for (uint32_t i = 0; i < v->n_configs; ++i) b->kernels[i].store(nullptr, std::memory_order_relaxed);
  st.head.store(b, std::memory_order_release);
  t->bound = b;
  return Status::kSuccess;
}

// Opens and checks the store of variant v in `dir`.
Status read_store(const FunctionalSlot& slot, const ArchVariant& v, const std::string& dir,
                  std::unique_ptr<ImageStore>* out) {
  std::string path = dir + "/sm_" + std::to_string(v.arch) + "/" + slot.kernel + "/" + slot.functional + ".aks";
  std::unique_ptr<ImageStore> store;
  Status s = ImageStore::open(path, &store);
  if (s == Status::kImageNotFound)
    return fail(s, std::string("kernel image missing: ") + last_error_message() + " (the library was built with sm_" +
                       std::to_string(v.arch) + " images for this functional; is " + dir +
                       " the image directory of this build?)");
  AOTRITON_RETURN_IF_ERROR(s);
  if (store->arch() != v.arch || store->kernel() != slot.kernel || store->functional() != slot.functional)
    return fail(Status::kCorruptImage, "image " + path + " holds kernel " + store->kernel() + " functional " +
                                           store->functional() + " for sm_" + std::to_string(store->arch()) +
                                           ", not what its path names: wrong or mixed-up image directory");
  *out = std::move(store);
  return Status::kSuccess;
}

Status open_store(const FunctionalSlot& slot, const ArchVariant& v, const ImageStore** out) {
  SlotState& st = *slot.state;  // caller holds st.mutex
  size_t index = static_cast<size_t>(&v - slot.variants);
  if (st.stores.size() < slot.n_variants) {
    st.stores.resize(slot.n_variants);
    st.store_failures.resize(slot.n_variants);
  }
  if (!st.stores[index]) {
    std::string dir;
    AOTRITON_RETURN_IF_ERROR(locate_image_dir(&dir));
    const uint64_t generation = image_dir_generation();
    StoreFailure& failed = st.store_failures[index];
    if (failed.status != Status::kSuccess && failed.dir == dir && failed.generation == generation)
      return fail(failed.status, failed.message);
    Status s = read_store(slot, v, dir, &st.stores[index]);
    if (s == Status::kImageNotFound || s == Status::kCorruptImage || s == Status::kIncompatibleImage)
      failed = StoreFailure{s, last_error_message(), dir, generation};  // the file will not change by itself
    AOTRITON_RETURN_IF_ERROR(s);
  }
  *out = st.stores[index].get();
  return Status::kSuccess;
}

// Loads one config of the bound variant; the caller holds slot.state->mutex.
Status load_one(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t config, const LoadedKernel** out) {
  BoundSlot& b = *t.bound;
  if (const LoadedKernel* k = b.kernels[config].load(std::memory_order_acquire)) {
    *out = k;
    return Status::kSuccess;
  }
  const ArchVariant& v = *b.variant;
  const ImageStore* store = nullptr;
  AOTRITON_RETURN_IF_ERROR(open_store(slot, v, &store));
  const std::string name = std::string(v.config_names[config]) + (b.use_ptx ? kPtxSuffix : "");
  const ImageEntry* e = store->find(name);
  if (!e)
    return fail(Status::kCorruptImage, std::string("image of kernel ") + slot.kernel + " functional " +
                                           slot.functional + " lacks config " + name + ": stale image directory?");
  if (e->global_scratch_size > 0)
    return fail(Status::kUnsupported, std::string("kernel ") + slot.kernel + " config " + name +
                                          " needs a global scratch buffer, which this runtime does not provide");
  // Triton launches num_ctas > 1 as clusters over a grid num_ctas times wider; a plain launch
  // would run half (or less) of the kernel's tiles, silently.
  if (e->num_ctas != 1)
    return fail(Status::kUnsupported, std::string("kernel ") + slot.kernel + " config " + name + " was compiled for " +
                                          "clusters of " + std::to_string(e->num_ctas) +
                                          " CTAs (num_ctas), which this runtime does not launch");
  const CudaDriver& cu = *t.cu;
  ContextScope scope(t.cu, t.context, t.push);
  AOTRITON_RETURN_IF_ERROR(scope.status());
  RelaxedCaptureScope relaxed(t.cu);
  CUmodule module;
  CUresult r = cu.cuModuleLoadData(&module, e->cubin);
  if (b.use_ptx && r != CUDA_SUCCESS)
    return fail(Status::kArchNotInBuild, std::string("the driver could not JIT the sm_") + std::to_string(v.arch) +
                                             " PTX of kernel " + slot.kernel + " for this GPU (CUresult " +
                                             std::to_string(static_cast<int>(r)) + "); rebuild for its arch");
  if (r == CUDA_ERROR_NO_BINARY_FOR_GPU || r == CUDA_ERROR_INVALID_IMAGE)
    return fail(Status::kArchNotInBuild, std::string("the sm_") + std::to_string(v.arch) + " cubin of kernel " +
                                             slot.kernel + " does not load on this GPU (CUresult " +
                                             std::to_string(static_cast<int>(r)) + ")");
  AOTRITON_RETURN_IF_ERROR(check_cu(cu, r, "cuModuleLoadData"));
  g_module_loads.fetch_add(1, std::memory_order_relaxed);
  ModuleGuard guard(cu, module);  // declared after scope: unloads while the context is current
  CUfunction fn;
  AOTRITON_RETURN_IF_ERROR(check_cu(cu, cu.cuModuleGetFunction(&fn, module, e->symbol.c_str()), "cuModuleGetFunction"));
  if (e->shared_bytes > kDefaultSharedLimit)
    AOTRITON_RETURN_IF_ERROR(check_cu(
        cu, cu.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(e->shared_bytes)),
        "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)"));
  auto* k = new LoadedKernel{fn, e->shared_bytes, e->num_warps * 32};
  guard.keep();
  b.kernels[config].store(k, std::memory_order_release);
  *out = k;
  return Status::kSuccess;
}

Status load_kernel(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t config, const LoadedKernel** out) {
  std::lock_guard<std::mutex> lock(slot.state->mutex);
  if (g_load_all_configs.load(std::memory_order_relaxed)) {
    const LoadedKernel* ignored;
    for (uint32_t i = 0; i < t.bound->variant->n_configs; ++i)
      AOTRITON_RETURN_IF_ERROR(load_one(slot, t, i, &ignored));
  }
  return load_one(slot, t, config, out);
}

}  // namespace

Status bind(const FunctionalSlot& slot, void* stream, LaunchTarget* t) {
  AOTRITON_RETURN_IF_ERROR(cuda_driver(&t->cu));
  const CudaDriver& cu = *t->cu;
  CUcontext current = nullptr;
  AOTRITON_RETURN_IF_ERROR(check_cu(cu, cu.cuCtxGetCurrent(&current), "cuCtxGetCurrent"));
  if (stream) {
    AOTRITON_RETURN_IF_ERROR(check_cu(cu, cu.cuStreamGetCtx(static_cast<CUstream>(stream), &t->context), "cuStreamGetCtx"));
  } else {
    t->context = current;
    if (!current)
      return fail(Status::kInvalidArgument,
                  "no current CUDA context for the default stream: make a device current (cudaSetDevice) first");
  }
  t->push = t->context != current;
  t->context_id = 0;
  if (cu.cuCtxGetId) {
    unsigned long long id = 0;
    AOTRITON_RETURN_IF_ERROR(check_cu(cu, cu.cuCtxGetId(t->context, &id), "cuCtxGetId"));
    t->context_id = id;
  }
  for (BoundSlot* b = slot.state->head.load(std::memory_order_acquire); b; b = b->next)
    if (same_context(*b, *t)) {
      t->bound = b;
      return Status::kSuccess;
    }
  return bind_slow(slot, t);
}

Status choose_config(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t lut_index,
                     const KernelOptions* options, uint32_t* config) {
  const ArchVariant& v = *t.bound->variant;
  if (options && options->force_config) {
    std::string want = options->force_config;
    for (uint32_t i = 0; i < v.n_configs; ++i)
      if (want == v.config_names[i]) {
        *config = i;
        return Status::kSuccess;
      }
    std::string have;
    for (uint32_t i = 0; i < v.n_configs; ++i) have += std::string(i ? ", " : "") + v.config_names[i];
    return fail(Status::kNotInBuild, std::string("kernel ") + slot.kernel + " functional " + slot.functional +
                                         " for sm_" + std::to_string(v.arch) + " has no config " + want +
                                         " in this build (have: " + have + "; the 'tune' profile has every config)");
  }
  *config = lut_index < v.lut_size ? v.lut[lut_index] : v.lut[v.lut_size - 1];
  return Status::kSuccess;
}

Status kernel_for(const FunctionalSlot& slot, const LaunchTarget& t, uint32_t config, const LoadedKernel** out) {
  // Preloading: the chosen config may be loaded already while its siblings are not.
  if (g_load_all_configs.load(std::memory_order_relaxed)) return load_kernel(slot, t, config, out);
  if (const LoadedKernel* k = t.bound->kernels[config].load(std::memory_order_acquire)) {
    *out = k;
    return Status::kSuccess;
  }
  return load_kernel(slot, t, config, out);
}

Status grid_dim(int64_t value, int axis, const char* kernel_name, uint32_t* out) {
  const int64_t limit = axis == 0 ? 0x7fffffffLL : 65535;
  if (value < 0 || value > limit)
    return fail(Status::kInvalidArgument, std::string("kernel ") + kernel_name + ": grid dimension " +
                                              std::to_string(axis) + " = " + std::to_string(value) +
                                              " is outside CUDA's range [0, " + std::to_string(limit) + "]");
  *out = static_cast<uint32_t>(value);
  return Status::kSuccess;
}

namespace {
thread_local bool t_resolve_only = false;
thread_local bool t_plain_launch = false;
}  // namespace

ResolveOnlyScope::ResolveOnlyScope() noexcept : previous_(t_resolve_only) { t_resolve_only = true; }
ResolveOnlyScope::~ResolveOnlyScope() { t_resolve_only = previous_; }
PlainLaunchScope::PlainLaunchScope(bool plain) noexcept : previous_(t_plain_launch) { t_plain_launch |= plain; }
PlainLaunchScope::~PlainLaunchScope() { t_plain_launch = previous_; }

// AOTRITON_CHECK_CONTEXT=1 (test builds, multi-GPU tests): before every launch,
// verify that the current context is the one the kernel's module was loaded in.
static const bool g_check_context = [] {
  const char* v = std::getenv("AOTRITON_CHECK_CONTEXT");
  return v && *v && *v != '0';
}();

namespace {
// A launch that may begin before the kernel ahead of it in the stream ends; the
// kernel's griddepcontrol.wait orders its memory accesses after that kernel's.
CUresult launch_programmatic_dependent(const CudaDriver& cu, const LoadedKernel& k, const uint32_t grid[3],
                                       void** params, CUstream stream) {
  CUlaunchAttribute attr{};
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig config{};
  config.gridDimX = grid[0];
  config.gridDimY = grid[1];
  config.gridDimZ = grid[2];
  config.blockDimX = k.block_threads;
  config.blockDimY = 1;
  config.blockDimZ = 1;
  config.sharedMemBytes = k.shared_bytes;
  config.hStream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  return cu.cuLaunchKernelEx(&config, k.function, params, nullptr);
}
}  // namespace

Status launch(const LaunchTarget& t, const LoadedKernel& k, const uint32_t grid[3], void** params, void* stream,
              const char* kernel_name, bool pdl) {
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0) return Status::kSuccess;  // empty problem
  if (t_resolve_only) return Status::kSuccess;  // see resolve_first.h: everything but the launch is done
  ContextScope scope(t.cu, t.context, t.push);
  AOTRITON_RETURN_IF_ERROR(scope.status());
  if (g_check_context) {
    CUcontext current = nullptr;
    t.cu->cuCtxGetCurrent(&current);
    if (current != t.bound->context)
      return fail(Status::kInternal, std::string(kernel_name) + ": launch in a context other than the one its module "
                                                                "was loaded in (AOTRITON_CHECK_CONTEXT)");
  }
  // The cubin has the wait only where it was built for sm_90+ (a PTX fallback for
  // sm_8x has none); a driver that refuses the attribute gets a plain launch.
  CUresult r = CUDA_ERROR_NOT_SUPPORTED;
  if (pdl && !t_plain_launch && t.bound->variant->arch >= 90 && programmatic_dependent_launch() &&
      pdl_for(kernel_name))
    r = launch_programmatic_dependent(*t.cu, k, grid, params, static_cast<CUstream>(stream));
  if (r == CUDA_ERROR_NOT_SUPPORTED)
    r = t.cu->cuLaunchKernel(k.function, grid[0], grid[1], grid[2], k.block_threads, 1, 1, k.shared_bytes,
                             static_cast<CUstream>(stream), params, nullptr);
  if (r == CUDA_ERROR_INVALID_HANDLE || r == CUDA_ERROR_CONTEXT_IS_DESTROYED) {
    if (!t.cu->cuCtxGetId) {
      // No context ids: the handle may be a new context's. Bind afresh next time.
      t.bound->stale.store(true, std::memory_order_release);
      check_cu(*t.cu, r, kernel_name);
      return fail(Status::kDriverError, std::string(last_error_message()) +
                                            "; its module was loaded in a context that is gone (the next call reloads)");
    }
  }
  if (r != CUDA_SUCCESS) return check_cu(*t.cu, r, kernel_name);
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
