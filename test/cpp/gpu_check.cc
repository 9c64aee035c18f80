// GPU checks of the C++ API (correctness vs a double-precision CPU reference,
// multi-threaded first use) and the host launch-overhead benchmark.
//   gpu_check test   -> "PASS ..."/"FAIL ..." lines, exit 1 on any failure
//   gpu_check bench  -> host microseconds per call: aotriton C++ API vs a raw
//                       cuLaunchKernel loop on the same cubin
// Exit code 77 when there is no GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aotriton/flash.h"
#include "aotriton/moe.h"
#include "aotriton/runtime.h"
#include "cuda_driver.h"
#include "image_store.h"

using namespace aotriton;

namespace {

int g_failures = 0;

#define CUDA_OK(x)                                                                   \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("FAIL cuda %s: %s\n", #x, cudaGetErrorString(e_));                 \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

// fp32 <-> fp16/bf16 bit conversions for host-side data.
// IEEE half via the hardware-independent bit manipulation (round to nearest even).
uint16_t to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, man = u & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  int e = int(exp) - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {  // subnormal half
    if (e < -10) return sign;
    man |= 0x800000;
    int shift = 14 - e;
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return sign | half;
  }
  uint32_t half = sign | (uint32_t(e) << 10) | (man >> 13), rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(half);
}
float from_half(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(man), -24);
    return sign ? -f : f;
  }
  uint32_t u = sign | ((exp == 31 ? 0xff : exp - 15 + 127) << 23) | (man << 13);
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct HostTensor {
  DType dtype;
  std::vector<float> values;  // values as rounded to dtype
  std::vector<uint8_t> bytes;
};

HostTensor random_tensor(DType dt, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.f, 2.f);
  HostTensor t{dt, std::vector<float>(n), std::vector<uint8_t>(n * dtype_size(dt))};
  for (size_t i = 0; i < n; ++i) {
    float v = dist(rng);
    if (dt == DType::kFloat16) {
      uint16_t b = to_half(v);
      std::memcpy(&t.bytes[2 * i], &b, 2);
      v = from_half(b);
    } else if (dt == DType::kBFloat16) {
      uint16_t b = to_bf16(v);
      std::memcpy(&t.bytes[2 * i], &b, 2);
      v = from_bf16(b);
    } else {
      std::memcpy(&t.bytes[4 * i], &v, 4);
    }
    t.values[i] = v;
  }
  return t;
}

std::vector<double> decode(DType dt, const std::vector<uint8_t>& bytes) {
  size_t n = bytes.size() / dtype_size(dt);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::kFloat32) {
      float f;
      std::memcpy(&f, &bytes[4 * i], 4);
      out[i] = f;
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[2 * i], 2);
      out[i] = dt == DType::kFloat16 ? from_half(b) : from_bf16(b);
    }
  }
  return out;
}

double rel_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

template <typename T>
T activation(moe::Activation act, T g) {
  if (act == moe::Activation::kSilu) return g / (T(1) + std::exp(-g));
  if (act == moe::Activation::kGelu) return T(0.5) * g * (T(1) + std::erf(g * T(0.7071067811865476)));
  return T(0.5) * g * (T(1) + std::tanh(T(0.7978845608028654) * (g + T(0.044715) * g * g * g)));
}

double round_to(DType dt, float v) {
  if (dt == DType::kFloat16) return from_half(to_half(v));
  if (dt == DType::kBFloat16) return from_bf16(to_bf16(v));
  return v;
}

double tolerance(DType dt) { return dt == DType::kFloat32 ? 1e-5 : dt == DType::kFloat16 ? 2e-3 : 1.5e-2; }

void* device_copy(const std::vector<uint8_t>& bytes) {
  void* p;
  CUDA_OK(cudaMalloc(&p, bytes.size()));
  CUDA_OK(cudaMemcpy(p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return p;
}

void* device_poisoned(size_t n) {
  void* p;
  CUDA_OK(cudaMalloc(&p, n));
  CUDA_OK(cudaMemset(p, 0xff, n));  // NaN in every float format
  return p;
}

void test_act_and_mul(DType dt, moe::Activation act, int64_t rows, int64_t cols, cudaStream_t stream, uint32_t seed) {
  std::mt19937 rng(seed);
  int64_t in_stride = 2 * cols + 8;  // strided rows
  HostTensor in = random_tensor(dt, rows * in_stride, rng);
  void* d_in = device_copy(in.bytes);
  size_t out_bytes = rows * cols * dtype_size(dt);
  void* d_out = device_poisoned(out_bytes);
  TensorView<2> out{d_out, {rows, cols}, {cols, 1}, dt};
  TensorView<2> input{d_in, {rows, 2 * cols}, {in_stride, 1}, dt};
  Status s = moe::act_and_mul({out, input, act}, Stream{stream});
  std::vector<uint8_t> host(out_bytes);
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(host.data(), d_out, out_bytes, cudaMemcpyDeviceToHost));
  // ref: the math in double; lowp: the same math in float (as the kernel
  // computes it), rounded to the output dtype.
  std::vector<double> ref(rows * cols), lowp(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double g = in.values[r * in_stride + c], u = in.values[r * in_stride + cols + c];
      ref[r * cols + c] = activation<double>(act, g) * u;
      lowp[r * cols + c] = round_to(dt, activation<float>(act, float(g)) * float(u));
    }
  double err = s == Status::kSuccess ? rel_error(decode(dt, host), ref) : INFINITY;
  double err_lowp = rel_error(lowp, ref);
  char what[200];
  std::snprintf(what, sizeof what, "act_and_mul %s act=%d %ldx%ld rel_err=%.2e (float math %.2e) status=%s",
                dtype_name(dt), static_cast<int>(act), long(rows), long(cols), err, err_lowp, status_name(s));
  // The flash-attn criterion where the tolerance is too tight for the
  // problem itself: exact GELU of a very negative input cancels in 1 + erf,
  // so a single element can be off by 1e-3 relative in float math already.
  check(s == Status::kSuccess && (err < tolerance(dt) || err <= 2 * err_lowp), what);
  cudaFree(d_in);
  cudaFree(d_out);
}

void test_moe_sum(DType dt, int64_t tokens, int64_t topk, int64_t hidden, cudaStream_t stream, uint32_t seed) {
  std::mt19937 rng(seed);
  HostTensor in = random_tensor(dt, tokens * topk * hidden, rng);
  void* d_in = device_copy(in.bytes);
  size_t out_bytes = tokens * hidden * dtype_size(dt);
  void* d_out = device_poisoned(out_bytes);
  Status s = moe::moe_sum({TensorView<2>{d_out, {tokens, hidden}, {hidden, 1}, dt},
                           TensorView<3>{d_in, {tokens, topk, hidden}, {topk * hidden, hidden, 1}, dt}},
                          Stream{stream});
  std::vector<uint8_t> host(out_bytes);
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(host.data(), d_out, out_bytes, cudaMemcpyDeviceToHost));
  std::vector<double> ref(tokens * hidden, 0.0);
  for (int64_t m = 0; m < tokens; ++m)
    for (int64_t k = 0; k < topk; ++k)
      for (int64_t h = 0; h < hidden; ++h) ref[m * hidden + h] += in.values[(m * topk + k) * hidden + h];
  double err = s == Status::kSuccess ? rel_error(decode(dt, host), ref) : INFINITY;
  char what[200];
  std::snprintf(what, sizeof what, "moe_sum %s %ldx%ldx%ld rel_err=%.2e status=%s", dtype_name(dt), long(tokens),
                long(topk), long(hidden), err, status_name(s));
  check(s == Status::kSuccess && err < tolerance(dt), what);
  cudaFree(d_in);
  cudaFree(d_out);
}

// 16 threads race to the first use of one functional: exactly one module load.
void test_threaded_first_use(cudaStream_t) {
  const int64_t rows = 64, cols = 512;
  void* d_in = device_poisoned(rows * 2 * cols * 4);
  void* d_out = device_poisoned(rows * cols * 4);
  CUDA_OK(cudaMemset(d_in, 0, rows * 2 * cols * 4));
  uint64_t before = module_load_count();
  std::atomic<int> errors{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&] {
      cudaSetDevice(0);
      cudaStream_t s;
      cudaStreamCreate(&s);
      while (!go.load()) {
      }
      TensorView<2> out{d_out, {rows, cols}, {cols, 1}, DType::kFloat32};
      TensorView<2> in{d_in, {rows, 2 * cols}, {2 * cols, 1}, DType::kFloat32};
      if (moe::act_and_mul({out, in, moe::Activation::kGeluTanh}, Stream{s}) != Status::kSuccess) ++errors;
      cudaStreamSynchronize(s);
      cudaStreamDestroy(s);
    });
  go = true;
  for (auto& t : threads) t.join();
  uint64_t loads = module_load_count() - before;
  check(errors == 0 && loads == 1,
        "16-thread first use: errors=" + std::to_string(errors.load()) + " module loads=" + std::to_string(loads));
  cudaFree(d_in);
  cudaFree(d_out);
}

void run_tests(cudaStream_t stream) {
  uint32_t seed = std::random_device{}();
  std::printf("seed %u, library %s, profile %s, images %s\n", seed, aotriton::version(), build_profile(), image_dir());
  test_threaded_first_use(stream);
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32})
    for (auto act : {moe::Activation::kSilu, moe::Activation::kGelu, moe::Activation::kGeluTanh}) {
      test_act_and_mul(dt, act, 1, 1, stream, ++seed);
      test_act_and_mul(dt, act, 37, 1000, stream, ++seed);
      test_act_and_mul(dt, act, 300, 14336, stream, ++seed);
    }
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    test_moe_sum(dt, 1, 1, 8, stream, ++seed);
    test_moe_sum(dt, 33, 8, 4096, stream, ++seed);
    test_moe_sum(dt, 222, 2, 7168 + 3, stream, ++seed);
  }
  // The default stream of the current context works too.
  test_act_and_mul(DType::kFloat16, moe::Activation::kSilu, 5, 77, nullptr, ++seed);
}

// ----------------------------------------------------------------------------
// Host launch overhead: median over batches of the per-call host time.
// ----------------------------------------------------------------------------
template <typename F>
double host_us_per_call(F&& launch_once, cudaStream_t stream) {
  const int batches = 50, per_batch = 200;
  std::vector<double> samples;
  for (int b = 0; b < batches + 5; ++b) {
    CUDA_OK(cudaStreamSynchronize(stream));
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < per_batch; ++i) launch_once();
    auto t1 = std::chrono::steady_clock::now();
    if (b >= 5) samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / per_batch);
  }
  CUDA_OK(cudaStreamSynchronize(stream));
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// Kernel launches and memsets one call enqueues: captured into a graph and counted.
bool count_launches(const std::function<Status(cudaStream_t)>& call, cudaStream_t stream, size_t* kernels,
                    size_t* memsets) {
  cudaGraph_t graph;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) != cudaSuccess) return false;
  Status s = call(stream);
  if (cudaStreamEndCapture(stream, &graph) != cudaSuccess || s != Status::kSuccess) return false;
  size_t n = 0;
  cudaGraphGetNodes(graph, nullptr, &n);
  std::vector<cudaGraphNode_t> nodes(n);
  cudaGraphGetNodes(graph, nodes.data(), &n);
  *kernels = *memsets = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    cudaGraphNodeGetType(node, &type);
    *kernels += type == cudaGraphNodeTypeKernel;
    *memsets += type == cudaGraphNodeTypeMemset;
  }
  cudaGraphDestroy(graph);
  return true;
}

// Host time of one C++ operator call against what its launches cost raw:
// api_us - (kernels + memsets) * raw_us, raw_us being one raw cuLaunchKernel.
int bench_operator(const char* name, const std::function<Status(cudaStream_t)>& call, cudaStream_t stream,
                   double raw_us) {
  if (call(stream) != Status::kSuccess) {  // loads the modules
    std::printf("FAIL bench %s: %s\n", name, last_error_message());
    return 1;
  }
  size_t kernels = 0, memsets = 0;
  if (!count_launches(call, stream, &kernels, &memsets)) {
    std::printf("FAIL bench %s: capture\n", name);
    return 1;
  }
  double api = host_us_per_call([&] { call(stream); }, stream);
  std::printf("BENCH %s_cpp_api_us %.3f\n", name, api);
  std::printf("BENCH %s_launches %zu (+ %zu memsets)\n", name, kernels, memsets);
  std::printf("BENCH %s_cpp_minus_raw_us %.3f\n", name, api - double(kernels + memsets) * raw_us);
  return 0;
}

// attn_fwd on (B, S, H, D) = (1, 64, 4, 64) fp16, causal: one kernel.
std::function<Status(cudaStream_t)> attn_fwd_call() {
  const int64_t B = 1, S = 64, H = 4, D = 64;
  const size_t bytes = B * S * H * D * 2;
  void* q = device_poisoned(bytes);
  CUDA_OK(cudaMemset(q, 0, bytes));
  void* out = device_poisoned(bytes);
  void* lse = device_poisoned(B * H * S * 4);
  flash::FwdParams p;
  TensorView<4> t{q, {B, S, H, D}, {S * H * D, H * D, D, 1}, DType::kFloat16};
  p.q = p.k = p.v = t;
  p.out = t;
  p.out.data = out;
  p.lse = {lse, {B, H, S}, {H * S, S, 1}, DType::kFloat32};
  p.softmax_scale = 0.125f;
  p.causal = flash::CausalType::kBottomRight;
  return [p](cudaStream_t s) { return flash::attn_fwd(p, Stream{s}); };  // buffers live to the end of the run
}

// fused_experts at M = 1: bf16, E = 8, N = 128, K = 256, top-2, caller workspace.
std::function<Status(cudaStream_t)> fused_experts_call() {
  const int64_t M = 1, E = 8, N = 128, K = 256, topk = 2;
  auto zeros = [](size_t n) {
    void* d = device_poisoned(n);
    CUDA_OK(cudaMemset(d, 0, n));
    return d;
  };
  moe::FusedExpertsParams p;
  p.hidden_states = {zeros(M * K * 2), {M, K}, {K, 1}, DType::kBFloat16};
  p.w1 = {zeros(E * 2 * N * K * 2), {E, 2 * N, K}, {2 * N * K, K, 1}, DType::kBFloat16};
  p.w2 = {zeros(E * K * N * 2), {E, K, N}, {K * N, N, 1}, DType::kBFloat16};
  p.topk_weights = {zeros(M * topk * 4), {M, topk}, {topk, 1}, DType::kFloat32};
  int32_t ids[] = {1, 5};
  void* d_ids = zeros(sizeof(ids));
  CUDA_OK(cudaMemcpy(d_ids, ids, sizeof(ids), cudaMemcpyHostToDevice));
  p.topk_ids = {d_ids, {M, topk}, {topk, 1}, DType::kInt32};
  p.output = {zeros(M * K * 2), {M, K}, {K, 1}, DType::kBFloat16};
  size_t ws = 0;
  if (moe::fused_experts_workspace_size(p, &ws) != Status::kSuccess) return [](cudaStream_t) {
      return Status::kInvalidArgument;
    };
  p.workspace = zeros(ws);
  p.workspace_bytes = ws;
  return [p](cudaStream_t s) { return moe::fused_experts(p, Stream{s}); };
}

int run_bench(cudaStream_t stream) {
  const int64_t rows = 4, cols = 256;  // a tiny tensor: host time dominates
  void* d_in = device_poisoned(rows * 2 * cols * 2);
  void* d_out = device_poisoned(rows * cols * 2);
  CUDA_OK(cudaMemset(d_in, 0, rows * 2 * cols * 2));
  TensorView<2> out{d_out, {rows, cols}, {cols, 1}, DType::kFloat16};
  TensorView<2> in{d_in, {rows, 2 * cols}, {2 * cols, 1}, DType::kFloat16};
  const char* ran = nullptr;
  KernelOptions opt;
  opt.ran_config = &ran;
  if (moe::act_and_mul({out, in, moe::Activation::kSilu}, Stream{stream}, &opt) != Status::kSuccess) {
    std::printf("FAIL bench launch: %s\n", last_error_message());
    return 1;
  }
  // Raw baseline: the same cubin loaded by hand, launched with cuLaunchKernel.
  const detail::CudaDriver* cu;
  if (detail::cuda_driver(&cu) != Status::kSuccess) return 1;
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  std::string path = std::string(image_dir()) + "/sm_" + std::to_string(major * 10 + minor) +
                     "/act_and_mul/dtype-fp16__ACTIVATION-0.aks";
  std::unique_ptr<detail::ImageStore> store;
  if (detail::ImageStore::open(path, &store) != Status::kSuccess) {
    std::printf("FAIL open %s: %s\n", path.c_str(), last_error_message());
    return 1;
  }
  const detail::ImageEntry* e = store->find(ran);
  CUmodule mod;
  CUfunction fn;
  if (!e || cu->cuModuleLoadData(&mod, e->cubin) != CUDA_SUCCESS ||
      cu->cuModuleGetFunction(&fn, mod, e->symbol.c_str()) != CUDA_SUCCESS) {
    std::printf("FAIL raw module load\n");
    return 1;
  }
  int32_t n_rows = rows, n_cols = cols;
  int64_t so = cols, si = 2 * cols;
  void* scratch = nullptr;
  void* params[] = {&d_out, &d_in, &n_rows, &n_cols, &so, &si, &scratch, &scratch};
  int block = 0;
  std::sscanf(ran, "BLOCK=%d", &block);
  unsigned gy = static_cast<unsigned>((cols + block - 1) / block);
  unsigned threads = e->num_warps * 32;
  CUstream cs = reinterpret_cast<CUstream>(stream);
  double raw = host_us_per_call([&] { cu->cuLaunchKernel(fn, rows, gy, 1, threads, 1, 1, e->shared_bytes, cs, params, nullptr); }, stream);
  double api = host_us_per_call([&] { moe::silu_and_mul(out, in, Stream{stream}); }, stream);
  double raw2 = host_us_per_call([&] { cu->cuLaunchKernel(fn, rows, gy, 1, threads, 1, 1, e->shared_bytes, cs, params, nullptr); }, stream);
  std::printf("BENCH host_us_per_call silu_and_mul fp16 %ldx%ld config %s\n", long(rows), long(cols), ran);
  std::printf("BENCH raw_cuLaunchKernel_us %.3f (repeat %.3f)\n", raw, raw2);
  std::printf("BENCH aotriton_cpp_api_us %.3f\n", api);
  std::printf("BENCH cpp_minus_raw_us %.3f\n", api - std::min(raw, raw2));
  cudaFree(d_in);
  cudaFree(d_out);
  int rc = bench_operator("attn_fwd", attn_fwd_call(), stream, std::min(raw, raw2));
  return rc | bench_operator("fused_experts", fused_experts_call(), stream, std::min(raw, raw2));
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "test";
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("SKIP no CUDA GPU\n");
    return 77;
  }
  CUDA_OK(cudaSetDevice(0));
  CUDA_OK(cudaFree(nullptr));  // make the primary context current
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  if (mode == "bench") return run_bench(stream);
  run_tests(stream);
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "OK", g_failures);
  return g_failures ? 1 : 0;
}
