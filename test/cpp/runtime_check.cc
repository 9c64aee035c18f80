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
  return 0;
}
