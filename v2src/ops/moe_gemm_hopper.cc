// The sm_90 Gluon grouped GEMM: which calls it serves, and its launch.
#include "moe_gemm_hopper.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "device_arch.h"
#include "fused_moe_gemm_hopper.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {
namespace detail {

namespace {

namespace kh = detail::kernels::fused_moe_gemm_hopper;
using detail::fail;
using detail::TmaTensor;

// The weights [E, N, K] as the kernel's descriptor sees them: [E * N, K]
// (one box: BLOCK_N rows of one expert, or of two where a tile crosses an
// expert's end; those columns are masked at the store).
bool weights_view(const GemmJob& j, TmaTensor* t) {
  if (j.num_experts > 1 && j.stride_be != j.N * j.stride_bn) return false;  // experts not back to back
  if (j.num_experts * j.N > INT32_MAX) return false;  // TMA row coordinates are int32
  t->ptr = j.b;
  t->shape[0] = j.num_experts * j.N, t->shape[1] = j.K;
  t->strides[0] = j.stride_bn, t->strides[1] = 1;
  return detail::tma_compatible(*t, j.ab_dtype, 2);
}

// What the kernel computes exactly as fused_moe_gemm does (its contract:
// tritonsrc/moe/grouped_gemm_hopper.py).
bool serves(const GemmJob& j, bool aligned, TmaTensor* b) {
  const bool half = j.ab_dtype == DType::kFloat16 || j.ab_dtype == DType::kBFloat16;
  return j.quant == QuantMode::kNone && half && j.c_dtype == j.ab_dtype && aligned &&
         j.block_size == detail::tables::kMoeHopperBlockSizeM && weights_view(j, b);
}

// Opt-in: AOTRITON_MOE_HOPPER=1 lets the automatic choice run this kernel.
// Measured on the H200 (bench/results/moe_sm90_hopper_gemm.json) it beat the
// tuned Triton kernel only at Mixtral-like M=512 (1.03x / 1.17x) and lost
// 2-5% at M=4096 (Mixtral and DeepSeek-like), so by default the Triton kernel
// runs. Read on every call (only calls it serves get here) so one process can
// compare both kernels (bench/bench_moe.py); set it before starting threads.
bool enabled() {
  const char* v = std::getenv("AOTRITON_MOE_HOPPER");
  return v && std::strcmp(v, "1") == 0;
}

// A forced config picks its kernel by name: one this kernel was compiled with.
bool forced(const KernelOptions* options) { return options && kh::has_config(options->force_config); }

kh::Functional functional(const GemmJob& j) {
  kh::Functional f{};
  f.dtype = j.ab_dtype;
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  return f;
}

Status launch(const GemmJob& j, const TmaTensor& b, Stream stream, const KernelOptions* options) {
  using detail::strided;
  const kh::Inputs in{
      .a_ptr = strided(j.a, j.stride_am), .b_desc = b, .c_ptr = strided(j.c, j.stride_cm),
      .topk_weights_ptr = j.topk_weights, .sorted_token_ids_ptr = j.sorted_token_ids,
      .expert_ids_ptr = j.expert_ids, .num_tokens_post_padded_ptr = j.num_tokens_post_padded,
      .N = j.N, .K = j.K, .EM = j.EM, .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k,
      .num_experts = j.num_experts,
      .tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)),
  };
  return kh::launch(in, functional(j), stream, options);
}

}  // namespace

Status launch_gemm_hopper(const char* op, const GemmJob& j, bool aligned, Stream stream,
                          const KernelOptions* options, bool* launched) {
  *launched = false;
  TmaTensor b;
  const bool ok = serves(j, aligned, &b);
  if (forced(options)) {
    if (!ok)
      return fail(Status::kInvalidArgument,
                  std::string(op) + ": force_config names a fused_moe_gemm_hopper config, but that kernel serves "
                                    "unquantized fp16/bf16 calls with block_size 128, K, N and the row strides "
                                    "multiples of 16, 16-byte aligned a, b and c, and b's experts back to back");
    *launched = true;
    return launch(j, b, stream, options);
  }
  namespace t = detail::tables;
  if (!ok || (options && options->force_config) || !enabled() || j.N < t::kMoeHopperMinN ||
      cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)) < t::kMoeHopperMinTokensPerExpert)
    return Status::kSuccess;
  int arch = 0;
  AOTRITON_RETURN_IF_ERROR(detail::device_arch(stream, &arch));
  if (arch != 90 || !kh::built_for(functional(j), 90)) return Status::kSuccess;
  *launched = true;
  return launch(j, b, stream, options);
}

}  // namespace detail
}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
