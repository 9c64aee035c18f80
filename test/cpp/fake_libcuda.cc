// A stand-in libcuda for CPU tests (loaded through AOTRITON_LIBCUDA): the
// driver entry points aotriton uses, with contexts, modules and launches as
// bookkeeping only (nothing runs), counters, failure injection, and context
// destruction + recreation that hands the same CUcontext handle back with a
// new id, as the real driver may. Controlled through the fakecuda_* functions
// (found with dlsym by test/cpp/runtime_fake_check.cc).
#include <cuda.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace {

struct Context {
  unsigned long long id;
};
struct Module {
  CUcontext ctx;
  unsigned long long ctx_id;
};
struct Function {
  Module* module;
};

std::mutex g_mu;
Context g_contexts[2] = {{1}, {2}};  // two devices' primary contexts; handles never change
unsigned long long g_next_id = 3;
std::set<Module*> g_live_modules;
thread_local CUcontext t_current = nullptr;  // set by init_thread(): constant-initialized TLS only
thread_local CUcontext t_stack[8];
thread_local int t_depth = 0;

std::atomic<long> g_loads{0}, g_unloads{0}, g_launches{0}, g_get_function{0}, g_push{0};
std::atomic<long> g_pdl_launches{0};  // of g_launches, those launched as programmatic dependents
std::atomic<int> g_fail_get_function{0}, g_fail_push{0};

// Every thread starts with context 0 current, as after cudaSetDevice(0).
void init_thread() {
  if (!t_current && t_depth == 0) t_current = reinterpret_cast<CUcontext>(&g_contexts[0]);
}

bool live(CUcontext c) { return c == reinterpret_cast<CUcontext>(&g_contexts[0]) || c == reinterpret_cast<CUcontext>(&g_contexts[1]); }

// Streams are fake too: the value 0x2 names a stream of context 1.
CUcontext stream_context(CUstream s) {
  if (reinterpret_cast<uintptr_t>(s) == 0x2) return reinterpret_cast<CUcontext>(&g_contexts[1]);
  return t_current;
}

CUresult fake_cuGetErrorString(CUresult r, const char** s) {
  switch (r) {
    case CUDA_ERROR_INVALID_HANDLE: *s = "invalid resource handle"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "invalid device context"; break;
    default: *s = "fake driver error"; break;
  }
  return CUDA_SUCCESS;
}
CUresult fake_cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice) {
  const char* cc = std::getenv("FAKECUDA_CC");  // e.g. "90"
  const int arch = cc ? std::atoi(cc) : 90;
  const char* sms = std::getenv("FAKECUDA_SMS");  // SM count; 0 (unknown) unless set
  *v = a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR   ? arch / 10
       : a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR ? arch % 10
       : a == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT && sms ? std::atoi(sms)
                                                             : 0;
  return CUDA_SUCCESS;
}
CUresult fake_cuCtxGetCurrent(CUcontext* c) {
  init_thread();
  *c = t_current;
  return CUDA_SUCCESS;
}
CUresult fake_cuCtxGetDevice(CUdevice* d) {
  init_thread();
  *d = t_current == reinterpret_cast<CUcontext>(&g_contexts[1]) ? 1 : 0;
  return CUDA_SUCCESS;
}
CUresult fake_cuCtxGetId(CUcontext c, unsigned long long* id) {
  if (!live(c)) return CUDA_ERROR_INVALID_CONTEXT;
  std::lock_guard<std::mutex> lock(g_mu);
  *id = reinterpret_cast<Context*>(c)->id;
  return CUDA_SUCCESS;
}
// The runtime relaxes the thread's capture mode around module loads.
thread_local CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
CUresult fake_cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode* mode) {
  std::swap(*mode, t_capture_mode);
  return CUDA_SUCCESS;
}
CUresult fake_cuCtxPushCurrent(CUcontext c) {
  init_thread();
  ++g_push;
  if (g_fail_push) return CUDA_ERROR_INVALID_CONTEXT;
  if (t_depth == 8) return CUDA_ERROR_UNKNOWN;
  t_stack[t_depth++] = t_current;
  t_current = c;
  return CUDA_SUCCESS;
}
CUresult fake_cuCtxPopCurrent(CUcontext* c) {
  if (t_depth == 0) return CUDA_ERROR_INVALID_CONTEXT;
  *c = t_current;
  t_current = t_stack[--t_depth];
  return CUDA_SUCCESS;
}
CUresult fake_cuStreamGetCtx(CUstream s, CUcontext* c) {
  init_thread();
  *c = stream_context(s);
  return CUDA_SUCCESS;
}
CUresult fake_cuModuleLoadData(CUmodule* m, const void* image) {
  init_thread();
  if (!image || std::memcmp(image, "\x7f" "ELF", 4) != 0) return CUDA_ERROR_INVALID_IMAGE;
  std::lock_guard<std::mutex> lock(g_mu);
  auto* mod = new Module{t_current, reinterpret_cast<Context*>(t_current)->id};
  g_live_modules.insert(mod);
  ++g_loads;
  *m = reinterpret_cast<CUmodule>(mod);
  return CUDA_SUCCESS;
}
CUresult fake_cuModuleUnload(CUmodule m) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto* mod = reinterpret_cast<Module*>(m);
  if (!g_live_modules.erase(mod)) return CUDA_ERROR_INVALID_HANDLE;
  delete mod;
  ++g_unloads;
  return CUDA_SUCCESS;
}
CUresult fake_cuModuleGetFunction(CUfunction* f, CUmodule m, const char*) {
  ++g_get_function;
  if (g_fail_get_function) return CUDA_ERROR_NOT_FOUND;
  *f = reinterpret_cast<CUfunction>(new Function{reinterpret_cast<Module*>(m)});
  return CUDA_SUCCESS;
}
CUresult fake_cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) { return CUDA_SUCCESS; }
CUresult fake_cuLaunchKernel(CUfunction f, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream s, void**, void**) {
  init_thread();
  std::lock_guard<std::mutex> lock(g_mu);
  Module* m = reinterpret_cast<Function*>(f)->module;
  // A module of a destroyed context is gone, whatever its handle says.
  if (!g_live_modules.count(m) || m->ctx_id != reinterpret_cast<Context*>(m->ctx)->id) return CUDA_ERROR_INVALID_HANDLE;
  if (m->ctx != stream_context(s)) return CUDA_ERROR_INVALID_HANDLE;
  ++g_launches;
  return CUDA_SUCCESS;
}
// Only programmatic dependent launches come through here (kernel_runtime.cc): count them.
// FAKECUDA_NO_PDL=1: a driver that refuses the attribute (the runtime falls back).
CUresult fake_cuLaunchKernelEx(const CUlaunchConfig* c, CUfunction f, void** params, void** extra) {
  if (std::getenv("FAKECUDA_NO_PDL")) return CUDA_ERROR_NOT_SUPPORTED;
  bool programmatic = false;
  for (unsigned i = 0; i < c->numAttrs; ++i)
    programmatic |= c->attrs[i].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION &&
                    c->attrs[i].value.programmaticStreamSerializationAllowed == 1;
  if (!programmatic) return CUDA_ERROR_INVALID_VALUE;
  CUresult r = fake_cuLaunchKernel(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY,
                                   c->blockDimZ, c->sharedMemBytes, c->hStream, params, extra);
  if (r == CUDA_SUCCESS) ++g_pdl_launches;
  return r;
}
CUresult fake_cuMemsetD8Async(CUdeviceptr, unsigned char, size_t, CUstream) { return CUDA_SUCCESS; }

}  // namespace

extern "C" {

__attribute__((visibility("default"))) CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
__attribute__((visibility("default"))) CUresult cuDriverGetVersion(int* v) {
  *v = 12080;
  return CUDA_SUCCESS;
}
__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(const char* name, void** pfn, int, cuuint64_t,
                                                                     CUdriverProcAddressQueryResult* q) {
  struct Entry {
    const char* name;
    void* fn;
  };
  static const Entry table[] = {
#define E(n) {#n, reinterpret_cast<void*>(&fake_##n)}
      E(cuGetErrorString), E(cuDeviceGetAttribute), E(cuCtxGetCurrent), E(cuCtxGetDevice), E(cuCtxGetId),
      E(cuCtxPushCurrent), E(cuCtxPopCurrent), E(cuStreamGetCtx), E(cuModuleLoadData), E(cuModuleUnload),
      E(cuModuleGetFunction), E(cuFuncSetAttribute), E(cuLaunchKernel), E(cuLaunchKernelEx), E(cuMemsetD8Async),
      E(cuThreadExchangeStreamCaptureMode),
#undef E
  };
  *pfn = nullptr;
  if (q) *q = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  // FAKECUDA_NO_CTX_ID=1: a driver without cuCtxGetId.
  if (std::strcmp(name, "cuCtxGetId") == 0 && std::getenv("FAKECUDA_NO_CTX_ID")) return CUDA_ERROR_NOT_FOUND;
  for (const Entry& e : table)
    if (std::strcmp(e.name, name) == 0) {
      *pfn = e.fn;
      if (q) *q = CU_GET_PROC_ADDRESS_SUCCESS;
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}

// ---- control and counters for the tests

// Destroys context `which` (0 or 1) and creates a new one with the same
// handle but a new id: its modules are gone.
__attribute__((visibility("default"))) void fakecuda_recreate_context(int which) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_contexts[which].id = g_next_id++;
}
__attribute__((visibility("default"))) void fakecuda_fail(const char* what, int on) {
  if (std::strcmp(what, "cuModuleGetFunction") == 0) g_fail_get_function = on;
  if (std::strcmp(what, "cuCtxPushCurrent") == 0) g_fail_push = on;
}
__attribute__((visibility("default"))) long fakecuda_pdl_launches() { return g_pdl_launches; }
// "loads unloads live launches get_function push"
__attribute__((visibility("default"))) void fakecuda_counts(long out[6]) {
  std::lock_guard<std::mutex> lock(g_mu);
  out[0] = g_loads, out[1] = g_unloads, out[2] = long(g_live_modules.size()), out[3] = g_launches;
  out[4] = g_get_function, out[5] = g_push;
}

}  // extern "C"
