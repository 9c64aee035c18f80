// Runtime checks that need no GPU: version/build info, argument validation,
// and the error returned when the CUDA driver is absent. Prints one line per
// check as "name: <status name>: <message>" for test/cpu/test_runtime_nogpu.py.
#include <cstdio>
#include <cstring>

#include "aotriton/moe.h"
#include "aotriton/runtime.h"

using namespace aotriton;

namespace {

alignas(16) unsigned char g_fake[4096];  // host memory: never reached by a kernel in these checks

TensorView<2> view2(DType dt, int64_t rows, int64_t cols, void* data = g_fake) {
  TensorView<2> v;
  v.data = data;
  v.sizes = {rows, cols};
  v.strides = {cols, 1};
  v.dtype = dt;
  return v;
}

void report(const char* name, Status s) {
  std::printf("%s: %s: %s\n", name, status_name(s), s == Status::kSuccess ? "" : last_error_message());
}

TensorView<3> view3(DType dt, int64_t e, int64_t rows, int64_t cols) {
  TensorView<3> v;
  v.data = g_fake;
  v.sizes = {e, rows, cols};
  v.strides = {rows * cols, cols, 1};
  v.dtype = dt;
  return v;
}

// DeepSeek-like bf16 layer (E=256, top-8, hidden 7168, N=2048) with M tokens.
moe::FusedExpertsParams deepseek_layer(int64_t M) {
  moe::FusedExpertsParams p;
  p.hidden_states = view2(DType::kBFloat16, M, 7168);
  p.w1 = view3(DType::kBFloat16, 256, 2 * 2048, 7168);
  p.w2 = view3(DType::kBFloat16, 256, 7168, 2048);
  p.topk_weights = view2(DType::kFloat32, M, 8);
  p.topk_ids = view2(DType::kInt32, M, 8);
  p.output = view2(DType::kBFloat16, M, 7168);
  return p;
}

// Large M runs in passes of at most 36864 tokens here (37449 = 2^31 / (8 * 7168)):
// the workspace of any larger M is that of one full pass.
void report_large_m() {
  size_t one = 0, two = 0, many = 0, small = 0;
  Status s = moe::fused_experts_workspace_size(deepseek_layer(36864), &one);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(40000), &two);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(1000000), &many);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(4096), &small);
  std::printf("large_m_workspace: %s: one_pass=%zu two_passes=%zu many_passes=%zu small=%zu\n", status_name(s), one,
              two, many, small);
  moe::FusedExpertsParams p = deepseek_layer(40000);
  p.workspace = g_fake;
  p.workspace_bytes = two;
  report("large_m_call", moe::fused_experts(p, {}));  // valid: reaches the driver
  p = deepseek_layer(40);  // one token's slots x hidden size overflow int32: no pass size works
  const int64_t huge_k = int64_t{1} << 28;
  p.hidden_states = view2(DType::kBFloat16, 40, huge_k);
  p.output = view2(DType::kBFloat16, 40, huge_k);
  p.w1 = view3(DType::kBFloat16, 256, 2 * 2048, huge_k);
  p.w2 = view3(DType::kBFloat16, 256, huge_k, 2048);
  report("large_m_unsplittable", moe::fused_experts_workspace_size(p, &many));
}

}  // namespace

int main() {
  std::printf("version: %s (header %s)\n", aotriton::version(), AOTRITON_VERSION_STRING);
  std::printf("profile: %s archs: %s kernels: %s\n", build_profile(), build_archs(), build_kernels());
  report("null_input", moe::silu_and_mul(view2(DType::kFloat16, 4, 8), view2(DType::kFloat16, 4, 16, nullptr), {}));
  report("dtype_mismatch", moe::silu_and_mul(view2(DType::kFloat16, 4, 8), view2(DType::kFloat32, 4, 16), {}));
  report("shape_mismatch", moe::silu_and_mul(view2(DType::kFloat16, 4, 8), view2(DType::kFloat16, 4, 15), {}));
  report("unsupported_dtype", moe::silu_and_mul(view2(DType::kInt32, 4, 8), view2(DType::kInt32, 4, 16), {}));
  TensorView<2> strided = view2(DType::kFloat16, 4, 16);
  strided.strides = {16, 2};
  report("inner_stride", moe::silu_and_mul(view2(DType::kFloat16, 4, 8), strided, {}));
  report("misaligned", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_fake + 2), view2(DType::kFloat16, 4, 16), {}));
  // Valid arguments: reaches the driver (kNoDriver when AOTRITON_LIBCUDA points nowhere).
  report("valid_call", moe::silu_and_mul(view2(DType::kFloat16, 4, 8), view2(DType::kFloat16, 4, 16), {}));
  std::printf("error_string: %s\n", error_string(Status::kNoDriver));
  report_large_m();
  return 0;
}
