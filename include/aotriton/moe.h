// Mixture-of-experts operators.
#pragma once
#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

enum class Activation : int32_t { kSilu = 0, kGelu = 1, kGeluTanh = 2 };

// out[m, n] = act(input[m, n]) * input[m, N + n]; input is [M, 2N], out [M, N].
// fp16, bf16 or fp32 (both the same); rows may be strided, columns contiguous.
struct ActAndMulParams {
  TensorView<2> out;
  TensorView<2> input;
  Activation activation = Activation::kSilu;
};
AOTRITON_API Status act_and_mul(const ActAndMulParams& params, Stream stream,
                                const KernelOptions* options = nullptr) noexcept;
AOTRITON_API Status silu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept;
AOTRITON_API Status gelu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept;

// out[m, h] = sum_k input[m, k, h]; input [M, topk, H], out [M, H].
struct MoeSumParams {
  TensorView<2> out;
  TensorView<3> input;
};
AOTRITON_API Status moe_sum(const MoeSumParams& params, Stream stream,
                            const KernelOptions* options = nullptr) noexcept;

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
