// MoE routing: grouped / sigmoid top-k (DeepSeek-V2/V3).
#include <cmath>
#include <string>

#include "grouped_topk.h"
#include "moe_internal.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_tensor;
using detail::fail;

namespace {

Status bad(const std::string& what) { return fail(Status::kInvalidArgument, "grouped_topk: " + what); }

Status check_groups(const GroupedTopkParams& p, int64_t E, int64_t topk) {
  const int64_t G = p.num_expert_group, TG = p.topk_group;
  if (G < 1 || E % G != 0)
    return bad("num_expert_group = " + std::to_string(G) + " must divide the number of experts " +
               std::to_string(E));
  if (TG < 1 || TG > G)
    return bad("topk_group = " + std::to_string(TG) + " must be in [1, num_expert_group = " + std::to_string(G) +
               "]");
  const int64_t selectable = TG * (E / G);
  if (topk < 1 || topk > selectable)
    return bad("topk = " + std::to_string(topk) + " must be in [1, " + std::to_string(selectable) +
               "] (topk_group * experts per group = " + std::to_string(TG) + " * " + std::to_string(E / G) + ")");
  if (p.scoring != Scoring::kSoftmax && p.scoring != Scoring::kSigmoid)
    return bad("unknown scoring " + std::to_string(static_cast<int32_t>(p.scoring)) + " (0 softmax, 1 sigmoid)");
  if (!std::isfinite(p.routed_scaling_factor))
    return bad("routed_scaling_factor must be finite");
  return Status::kSuccess;
}

Status check_bias(const char* op, const TensorView<1>& bias, int64_t E, const GroupedTopkParams& p) {
  if (!bias.data) return Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "e_score_correction_bias", bias, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "e_score_correction_bias", bias.dtype, DType::kFloat32));
  if (bias.size(0) != E)
    return bad("e_score_correction_bias has " + std::to_string(bias.size(0)) + " entries, expected one per expert (" +
               std::to_string(E) + ")");
  if (E / p.num_expert_group < 2 && p.topk_group < p.num_expert_group)
    return bad("with e_score_correction_bias a group's score sums its two best experts: groups need at least 2 "
               "experts (num_expert_group = " + std::to_string(p.num_expert_group) + ", experts = " +
               std::to_string(E) + ")");
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "e_score_correction_bias.stride(0)", bias.stride(0)));
  return detail::check_i32_offset(op, "bias offset, (experts - 1) * stride + 1", E, bias.stride(0), 1);
}

}  // namespace

Status grouped_topk(const GroupedTopkParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "grouped_topk";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "logits", p.logits, false));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_weights", p.topk_weights));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_ids", p.topk_ids));
  const DType ld = p.logits.dtype;
  if (ld != DType::kFloat16 && ld != DType::kBFloat16 && ld != DType::kFloat32)
    return bad(std::string("logits is ") + dtype_name(ld) + ", expected fp16, bf16 or fp32");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", p.topk_weights.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  const int64_t M = p.logits.size(0), E = p.logits.size(1), topk = p.topk_weights.size(1);
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_weights", p.topk_weights.size(0), 0, "logits", M, 0));
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_ids", p.topk_ids.size(0), 0, "logits", M, 0));
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_ids", p.topk_ids.size(1), 1, "topk_weights", topk, 1));
  if (E < 1 || E > detail::kMaxExperts)
    return fail(Status::kUnsupported, "grouped_topk: logits.size(1) (experts) = " + std::to_string(E) +
                                          " must be in [1, " + std::to_string(detail::kMaxExperts) + "]");
  AOTRITON_RETURN_IF_ERROR(check_groups(p, E, topk));
  AOTRITON_RETURN_IF_ERROR(check_bias(op, p.e_score_correction_bias, E, p));
  for (auto [what, v] : {std::pair{"tokens", M}, {"logits.stride(0)", p.logits.stride(0)},
                         {"logits.stride(1)", p.logits.stride(1)}, {"topk_weights.stride(0)", p.topk_weights.stride(0)},
                         {"topk_ids.stride(0)", p.topk_ids.stride(0)}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  AOTRITON_RETURN_IF_ERROR(
      detail::check_i32_offset(op, "logits expert offset, (experts - 1) * stride(1) + 1", E, p.logits.stride(1), 1));
  for (auto [name, t] : {std::pair{"topk_weights", &p.topk_weights}, {"topk_ids", &p.topk_ids}})
    AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, name, *t));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("topk_weights", p.topk_weights), detail::span_of("topk_ids", p.topk_ids)},
      {detail::span_of("logits", p.logits), detail::span_of("e_score_correction_bias", p.e_score_correction_bias)}));
  if (M == 0) return Status::kSuccess;
  const bool has_bias = p.e_score_correction_bias.data != nullptr;
  namespace k = detail::kernels::grouped_topk;
  using detail::strided;
  const k::Inputs in{
      .logits_ptr = strided(p.logits.data, p.logits.stride(0), p.logits.stride(1)),
      .bias_ptr = has_bias ? strided(p.e_score_correction_bias.data, p.e_score_correction_bias.stride(0))
                           : strided(nullptr, 0),
      .topk_weights_ptr = strided(p.topk_weights.data, p.topk_weights.stride(0)),
      .topk_ids_ptr = strided(p.topk_ids.data, p.topk_ids.stride(0)),
      .num_tokens = M, .num_experts = E, .topk = topk, .num_groups = p.num_expert_group, .topk_group = p.topk_group,
      .scoring = static_cast<int32_t>(p.scoring), .has_bias = has_bias ? 1 : 0, .renormalize = p.renormalize ? 1 : 0,
      .routed_scaling_factor = p.routed_scaling_factor,
  };
  k::Functional f{ld, detail::pow2_at_least(E, 8)};
  return k::launch(in, f, stream, options);
} catch (...) {
  return detail::fail_exception("grouped_topk: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
