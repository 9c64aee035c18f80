// The sm_90 Gluon grouped GEMM: which calls it serves, and its launch.
#include "moe_gemm_hopper.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "device_arch.h"
#include "fused_moe_gemm_hopper.h"
#include "fused_moe_gemm_hopper_fp8.h"
#include "fused_moe_gemm_hopper_persistent.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {
namespace detail {

namespace {

namespace kh = detail::kernels::fused_moe_gemm_hopper;
namespace kh8 = detail::kernels::fused_moe_gemm_hopper_fp8;
namespace khp = detail::kernels::fused_moe_gemm_hopper_persistent;
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

bool fp8_scaled(QuantMode q) {
  return q == QuantMode::kFp8PerTensor || q == QuantMode::kFp8Block || q == QuantMode::kFp8PerChannel;
}

// What one of the two kernels computes exactly as fused_moe_gemm does (their
// contracts: tritonsrc/moe/grouped_gemm_hopper.py, grouped_gemm_hopper_fp8.py).
bool serves(const GemmJob& j, bool aligned, TmaTensor* b) {
  const bool half_c = j.c_dtype == DType::kFloat16 || j.c_dtype == DType::kBFloat16;
  const bool types = j.quant == QuantMode::kNone ? half_c && j.ab_dtype == j.c_dtype
                                                 : fp8_scaled(j.quant) && j.ab_dtype == DType::kFloat8E4M3 && half_c;
  return types && aligned && j.block_size == detail::tables::kMoeHopperBlockSizeM && weights_view(j, b);
}

// The automatic choice: both forms where they serve (fp16/bf16 from
// kMoeHopperPersistentMinTokensPerExpert slots per expert in the persistent form);
// AOTRITON_MOE_HOPPER=0 neither. Measured on the H200 (bench/results/moe_sm90.json,
// 2026-12-05), the bf16 forms beat the tuned Triton kernel at Mixtral-like M=512 and 4096
// (1.01-1.15x) and tie at DeepSeek-like M=4096 (0.985-1.0x); the fp8 form won
// (1.12-1.33x at M=4096, bench/results/moe_fp8_gluon_r4_sm90.json) or tied
// (Mixtral-like M=512 block GEMM1, 128 slots per expert: 0.99x) in every measured row
// from 128 slots per expert.
// Read on every call (only calls a kernel serves get here) so one process can
// compare both (bench/bench_moe.py); set it before starting threads.
bool enabled() {
  const char* v = std::getenv("AOTRITON_MOE_HOPPER");
  return !(v && std::strcmp(v, "0") == 0);
}

int64_t min_tokens_per_expert(const GemmJob& j) {
  namespace t = detail::tables;
  return j.quant == QuantMode::kNone ? t::kMoeHopperMinTokensPerExpert : t::kMoeHopperFp8MinTokensPerExpert;
}

// A forced config picks its kernel by name: one this kernel was compiled with.
bool forced(const GemmJob& j, const KernelOptions* options) {
  if (!options) return false;
  return j.quant == QuantMode::kNone ? kh::has_config(options->force_config)
                                     : kh8::has_config(options->force_config);
}

// The functional of each kernel for a call (the fp8 kernel is named by its output dtype).
kh::Functional bf16_functional(const GemmJob& j) {
  kh::Functional f{};
  f.dtype = j.ab_dtype;
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  return f;
}

khp::Functional persistent_functional(const GemmJob& j) {
  khp::Functional f{};
  f.dtype = j.ab_dtype;
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  return f;
}

kh8::Functional fp8_functional(const GemmJob& j) {
  kh8::Functional f{};
  f.dtype = j.c_dtype;
  f.QUANT = static_cast<int32_t>(j.quant);
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  return f;
}

bool built_for(const GemmJob& j, int arch) {
  return j.quant == QuantMode::kNone ? kh::built_for(bf16_functional(j), arch)
                                     : kh8::built_for(fp8_functional(j), arch);
}

// The persistent fp16/bf16 form (tritonsrc/moe/grouped_gemm_hopper_persistent.py): one
// program per SM walks the tiles; programs past the tile count exit at once.
Status launch_persistent(const GemmJob& j, const TmaTensor& b, int sms, Stream stream,
                         const KernelOptions* options) {
  using detail::strided;
  const khp::Inputs in{
      .a_ptr = strided(j.a, j.stride_am), .b_desc = b, .c_ptr = strided(j.c, j.stride_cm),
      .topk_weights_ptr = j.topk_weights, .sorted_token_ids_ptr = j.sorted_token_ids,
      .expert_ids_ptr = j.expert_ids, .num_tokens_post_padded_ptr = j.num_tokens_post_padded,
      .N = j.N, .K = j.K, .EM = j.EM, .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k,
      .num_experts = j.num_experts, .num_programs = sms,
      .tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)),
  };
  return khp::launch(in, persistent_functional(j), stream, options);
}

Status launch(const GemmJob& j, const TmaTensor& b, Stream stream, const KernelOptions* options) {
  using detail::strided;
  const int64_t tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1));
  if (j.quant == QuantMode::kNone) {
    const kh::Inputs in{
        .a_ptr = strided(j.a, j.stride_am), .b_desc = b, .c_ptr = strided(j.c, j.stride_cm),
        .topk_weights_ptr = j.topk_weights, .sorted_token_ids_ptr = j.sorted_token_ids,
        .expert_ids_ptr = j.expert_ids, .num_tokens_post_padded_ptr = j.num_tokens_post_padded,
        .N = j.N, .K = j.K, .EM = j.EM, .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k,
        .num_experts = j.num_experts, .tokens_per_expert = tokens_per_expert,
    };
    return kh::launch(in, bf16_functional(j), stream, options);
  }
  // Scale strides as fused_moe_gemm takes them (launch_gemm set them per quant mode).
  const kh8::Inputs in{
      .a_ptr = strided(j.a, j.stride_am), .b_desc = b, .c_ptr = strided(j.c, j.stride_cm),
      .a_scale_ptr = j.a_scale, .b_scale_ptr = j.b_scale, .topk_weights_ptr = j.topk_weights,
      .sorted_token_ids_ptr = j.sorted_token_ids, .expert_ids_ptr = j.expert_ids,
      .num_tokens_post_padded_ptr = j.num_tokens_post_padded, .N = j.N, .K = j.K, .EM = j.EM,
      .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k, .stride_asm = j.stride_asm,
      .stride_ask = j.stride_ask, .stride_bse = j.stride_bse, .stride_bsn = j.stride_bsn,
      .stride_bsk = j.stride_bsk, .num_experts = j.num_experts, .tokens_per_expert = tokens_per_expert,
  };
  return kh8::launch(in, fp8_functional(j), stream, options);
}

}  // namespace

Status launch_gemm_hopper(const char* op, const GemmJob& j, bool aligned, Stream stream,
                          const KernelOptions* options, bool* launched) {
  *launched = false;
  TmaTensor b;
  const bool ok = serves(j, aligned, &b);
  if (forced(j, options)) {
    if (!ok)
      return fail(Status::kInvalidArgument,
                  std::string(op) + ": force_config names a fused_moe_gemm_hopper(_fp8) config, but that kernel "
                                    "serves unquantized fp16/bf16 or fp8-scaled calls with block_size 128, K, N and "
                                    "the row strides multiples of 16, 16-byte aligned a, b and c, and b's experts "
                                    "back to back");
    *launched = true;
    return launch(j, b, stream, options);
  }
  namespace t = detail::tables;
  if (!ok || (options && options->force_config) || !enabled() || j.N < t::kMoeHopperMinN ||
      cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)) < min_tokens_per_expert(j))
    return Status::kSuccess;
  int arch = 0, sms = 0;
  AOTRITON_RETURN_IF_ERROR(detail::device_info(stream, &arch, &sms));
  if (arch != 90) return Status::kSuccess;
  // fp16/bf16 with many slots per expert: the persistent form where it is built.
  if (j.quant == QuantMode::kNone && sms > 0 &&
      cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)) >= t::kMoeHopperPersistentMinTokensPerExpert &&
      khp::built_for(persistent_functional(j), 90)) {
    *launched = true;
    return launch_persistent(j, b, sms, stream, options);
  }
  if (!built_for(j, 90)) return Status::kSuccess;
  *launched = true;
  return launch(j, b, stream, options);
}

}  // namespace detail
}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
