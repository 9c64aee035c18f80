// MoE grouped GEMM (vLLM's invoke_fused_moe_kernel) and its launch helper.
#include <algorithm>
#include <iterator>
#include <string>

#include "fused_moe_gemm.h"
#include "moe_internal.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;
using detail::fail;
using internal::cdiv;
using internal::is_contiguous;

int32_t moe_gemm_block_size(int64_t num_tokens, bool aligned) noexcept {
  // The BLOCK_SIZE_M column of DEFAULT_CONFIGS (tritonsrc/moe/configs.py, block_size_m).
  namespace t = detail::tables;
  const int32_t* rows = aligned ? t::kMoeBlockSizeMAligned : t::kMoeBlockSizeMUnaligned;
  size_t i = 0;
  while (i < std::size(t::kMoeMBins) && num_tokens > t::kMoeMBins[i]) ++i;
  return rows[i];
}

namespace internal {

Status launch_gemm(const char* op, const GemmJob& j, Stream stream, const KernelOptions* options) {
  for (auto [what, v] : {std::pair{"N", j.N}, {"K", j.K}, {"sorted_token_ids size", j.EM},
                         {"number of slots", j.num_valid_tokens}, {"top_k", j.top_k}, {"a row stride", j.stride_am},
                         {"b expert stride", j.stride_be}, {"b row stride", j.stride_bn}, {"c row stride", j.stride_cm},
                         {"a_scale strides", j.stride_asm}, {"a_scale strides", j.stride_ask},
                         {"b_scale strides", j.stride_bse}, {"b_scale strides", j.stride_bsn},
                         {"b_scale strides", j.stride_bsk}, {"number of experts", j.num_experts}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  // Offsets the kernel forms in int32 (tritonsrc/moe/grouped_gemm.py): the
  // column within an expert's weights (any layout, e.g. not [E, N, K]) and the
  // K-group offsets into the block scales.
  AOTRITON_RETURN_IF_ERROR(
      detail::check_i32_offset(op, "weight offset within an expert, (N - 1) * b row stride + K", j.N, j.stride_bn, j.K));
  if (j.quant == QuantMode::kFp8Block) {
    const int64_t kg = cdiv(j.K, kScaleGroup), ng = cdiv(j.N, kScaleGroup);
    AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "a_scale K-group offset", kg, j.stride_ask, 1));
    int64_t n_part = 0;
    AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "b_scale N-group offset", {ng - 1, j.stride_bsn}, &n_part));
    AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "b_scale group offset", kg, j.stride_bsk, n_part + 1));
  }
  if (j.num_valid_tokens == 0 || j.N == 0) return Status::kSuccess;
  const bool aligned = j.K % 16 == 0 && j.N % 16 == 0 && j.stride_am % 16 == 0 && j.stride_be % 16 == 0 &&
                       j.stride_bn % 16 == 0 && j.stride_cm % 16 == 0 && aligned16(j.a) && aligned16(j.b) &&
                       aligned16(j.c);
  namespace k = detail::kernels::fused_moe_gemm;
  k::Args a{};
  a.a_ptr = j.a;
  a.b_ptr = j.b;
  a.c_ptr = j.c;
  a.a_scale_ptr = j.a_scale;
  a.b_scale_ptr = j.b_scale;
  a.topk_weights_ptr = j.topk_weights;
  a.sorted_token_ids_ptr = j.sorted_token_ids;
  a.expert_ids_ptr = j.expert_ids;
  a.num_tokens_post_padded_ptr = j.num_tokens_post_padded;
  a.N = static_cast<int32_t>(j.N);
  a.K = static_cast<int32_t>(j.K);
  a.EM = static_cast<int32_t>(j.EM);
  a.num_valid_tokens = static_cast<int32_t>(j.num_valid_tokens);
  a.top_k = static_cast<int32_t>(j.top_k);
  a.stride_am = static_cast<int32_t>(j.stride_am);
  a.stride_be = static_cast<int32_t>(j.stride_be);
  a.stride_bn = static_cast<int32_t>(j.stride_bn);
  a.stride_cm = static_cast<int32_t>(j.stride_cm);
  a.stride_asm = static_cast<int32_t>(j.stride_asm);
  a.stride_ask = static_cast<int32_t>(j.stride_ask);
  a.stride_bse = static_cast<int32_t>(j.stride_bse);
  a.stride_bsn = static_cast<int32_t>(j.stride_bsn);
  a.stride_bsk = static_cast<int32_t>(j.stride_bsk);
  a.num_experts = static_cast<int32_t>(j.num_experts);
  a.tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1));
  k::Functional f{};
  f.ab_dtype = j.ab_dtype;
  f.c_dtype = j.c_dtype;
  f.QUANT = static_cast<int32_t>(j.quant);
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  f.ALIGNED = aligned;
  f.BLOCK_SIZE_M = j.block_size;
  return k::launch(a, f, stream, options);
}

}  // namespace internal

namespace {

bool is_half(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

Status check_scalar_scale(const char* op, const char* name, const void* data, DType dtype, int64_t numel,
                          bool contiguous, int64_t allowed2) {
  if (!data) return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is required for fp8 per-tensor");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, dtype, DType::kFloat32));
  if (!(numel == 1 || numel == allowed2) || !contiguous)
    return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " must be contiguous with 1" +
                                              (allowed2 > 1 ? " or " + std::to_string(allowed2) : std::string()) +
                                              " elements (has " + std::to_string(numel) + ")");
  return Status::kSuccess;
}

template <int R>
Status check_block_scale(const char* op, const char* name, const TensorView<R>& t, const int64_t (&want)[R]) {
  if (!t.data) return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is required for fp8 block");
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, DType::kFloat32));
  for (int i = 0; i < R; ++i)
    if (t.size(i) != want[i])
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " has shape " +
                                                detail::shape_string(t.sizes.data(), R) + ", expected " +
                                                detail::shape_string(want, R));
  return Status::kSuccess;
}

}  // namespace

Status grouped_gemm(const GroupedGemmParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "grouped_gemm";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "a", p.a));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "b", p.b));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "c", p.c));
  const int64_t E = p.b.size(0), N = p.b.size(1), K = p.b.size(2), slots = p.c.size(0);
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "a", p.a.size(1), 1, "b", K, 2));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "c", p.c.size(1), 1, "b", N, 1));
  if (!is_half(p.c.dtype))
    return fail(Status::kInvalidArgument, std::string(op) + ": c is " + dtype_name(p.c.dtype) + ", expected fp16 or bf16");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "b", p.b.dtype, p.a.dtype));
  if (p.quant == QuantMode::kNone) {
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, "a", p.a.dtype, p.c.dtype));
  } else if (p.quant == QuantMode::kFp8PerTensor || p.quant == QuantMode::kFp8Block) {
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, "a", p.a.dtype, DType::kFloat8E4M3));
  } else {
    return fail(Status::kInvalidArgument, std::string(op) + ": unknown quant mode");
  }
  if (p.top_k < 1) return fail(Status::kInvalidArgument, std::string(op) + ": top_k must be >= 1");
  int64_t a_slots = 0;
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "a.size(0) * top_k", {p.a.size(0), p.top_k}, &a_slots));
  if (slots > a_slots)
    return fail(Status::kInvalidArgument, std::string(op) + ": c.size(0) = " + std::to_string(slots) +
                                              " exceeds a.size(0) * top_k = " + std::to_string(a_slots));
  if (!internal::is_gemm_block_size(p.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": block_size = " + std::to_string(p.block_size) +
                                              " must be 16, 32, 64 or 128 (the moe_align block size)");
  for (auto [name, t] : {std::pair{"sorted_token_ids", &p.sorted_token_ids}, {"expert_ids", &p.expert_ids},
                         {"num_tokens_post_padded", &p.num_tokens_post_padded}}) {
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, *t));
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t->dtype, DType::kInt32));
    if (!t->data || t->size(0) < 1)
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is empty or null");
  }
  const int64_t EM = p.sorted_token_ids.size(0);
  if (p.expert_ids.size(0) < cdiv(EM, p.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": expert_ids has " + std::to_string(p.expert_ids.size(0)) +
                                              " entries, needs cdiv(sorted_token_ids.size(0), block_size) = " +
                                              std::to_string(cdiv(EM, p.block_size)));
  const float* weights = nullptr;
  if (p.mul_routed_weight) {
    const TensorView<2>& w = p.topk_weights;
    if (!w.data) return fail(Status::kInvalidArgument, std::string(op) + ": topk_weights is required with mul_routed_weight");
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_weights", w));
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", w.dtype, DType::kFloat32));
    if (!is_contiguous(w) || w.numel() != slots)
      return fail(Status::kInvalidArgument, std::string(op) + ": topk_weights must be contiguous with c.size(0) = " +
                                                std::to_string(slots) + " elements");
    weights = static_cast<const float*>(w.data);
  }
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "c", p.c));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("c", p.c)},
      {detail::span_of("a", p.a), detail::span_of("b", p.b), detail::span_of("a_scale", p.a_scale),
       detail::span_of("b_scale", p.b_scale), detail::span_of("topk_weights", p.topk_weights),
       detail::span_of("sorted_token_ids", p.sorted_token_ids), detail::span_of("expert_ids", p.expert_ids),
       detail::span_of("num_tokens_post_padded", p.num_tokens_post_padded)}));
  internal::GemmJob j{};
  j.a = p.a.data;
  j.b = p.b.data;
  j.c = p.c.data;
  j.topk_weights = weights;
  j.sorted_token_ids = static_cast<const int32_t*>(p.sorted_token_ids.data);
  j.expert_ids = static_cast<const int32_t*>(p.expert_ids.data);
  j.num_tokens_post_padded = static_cast<const int32_t*>(p.num_tokens_post_padded.data);
  j.N = N;
  j.K = K;
  j.EM = EM;
  j.num_valid_tokens = slots;
  j.num_experts = E;
  j.top_k = p.top_k;
  j.stride_am = p.a.stride(0);
  j.stride_be = p.b.stride(0);
  j.stride_bn = p.b.stride(1);
  j.stride_cm = p.c.stride(0);
  j.ab_dtype = p.a.dtype;
  j.c_dtype = p.c.dtype;
  j.quant = p.quant;
  j.mul_routed_weight = p.mul_routed_weight;
  j.block_size = p.block_size;
  if (p.quant == QuantMode::kFp8PerTensor) {
    AOTRITON_RETURN_IF_ERROR(check_scalar_scale(op, "a_scale", p.a_scale.data, p.a_scale.dtype, p.a_scale.numel(),
                                                is_contiguous(p.a_scale), 1));
    AOTRITON_RETURN_IF_ERROR(check_scalar_scale(op, "b_scale", p.b_scale.data, p.b_scale.dtype, p.b_scale.numel(),
                                                is_contiguous(p.b_scale), E));
    j.a_scale = static_cast<const float*>(p.a_scale.data);
    j.b_scale = static_cast<const float*>(p.b_scale.data);
    j.stride_bse = p.b_scale.numel() == 1 ? 0 : 1;
  } else if (p.quant == QuantMode::kFp8Block) {
    const int64_t kg = cdiv(K, internal::kScaleGroup), ng = cdiv(N, internal::kScaleGroup);
    AOTRITON_RETURN_IF_ERROR(check_block_scale<2>(op, "a_scale", p.a_scale, {p.a.size(0), kg}));
    AOTRITON_RETURN_IF_ERROR(check_block_scale<3>(op, "b_scale", p.b_scale, {E, ng, kg}));
    j.a_scale = static_cast<const float*>(p.a_scale.data);
    j.b_scale = static_cast<const float*>(p.b_scale.data);
    j.stride_asm = p.a_scale.stride(0);
    j.stride_ask = p.a_scale.stride(1);
    j.stride_bse = p.b_scale.stride(0);
    j.stride_bsn = p.b_scale.stride(1);
    j.stride_bsk = p.b_scale.stride(2);
  }
  return internal::launch_gemm(op, j, stream, options);
} catch (...) {
  return detail::fail_exception("grouped_gemm: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
