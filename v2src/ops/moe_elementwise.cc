// MoE element-wise operators: gated activation and the top-k reduction.
#include "act_and_mul.h"
#include "aotriton/moe.h"
#include "moe_sum.h"
#include "tensor_checks.h"

#include <string>

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;

Status act_and_mul(const ActAndMulParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "act_and_mul";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "input", p.input));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "out", p.out.dtype, p.input.dtype));
  if (static_cast<int32_t>(p.activation) < 0 || static_cast<int32_t>(p.activation) > 3)
    return detail::fail(Status::kInvalidArgument, "act_and_mul: unknown activation " +
                                                      std::to_string(static_cast<int32_t>(p.activation)) +
                                                      " (0 silu, 1 gelu, 2 gelu_tanh, 3 swigluoai)");
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "out", p.out.size(0), 0, "input", p.input.size(0), 0));
  if (p.input.size(1) != 2 * p.out.size(1))
    return detail::fail(Status::kInvalidArgument, "act_and_mul: input.size(1) = " + std::to_string(p.input.size(1)) +
                                                      " must be 2 * out.size(1) = " + std::to_string(2 * p.out.size(1)));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "rows", p.out.size(0)));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "columns", p.input.size(1)));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(op, {detail::span_of("out", p.out)}, {detail::span_of("input", p.input)}));
  if (p.out.numel() == 0) return Status::kSuccess;
  namespace k = detail::kernels::act_and_mul;
  const k::Inputs in{.out_ptr = detail::strided(p.out.data, p.out.stride(0)),
                     .in_ptr = detail::strided(p.input.data, p.input.stride(0)),
                     .n_rows = p.out.size(0), .n_cols = p.out.size(1)};
  k::Functional f{p.input.dtype, static_cast<int32_t>(p.activation)};
  return k::launch(in, f, stream, options);
} catch (...) {
  return detail::fail_exception("act_and_mul: unexpected exception");
}

Status silu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept {
  return act_and_mul({out, input, Activation::kSilu}, stream);
}

Status gelu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept {
  return act_and_mul({out, input, Activation::kGelu}, stream);
}

Status moe_sum(const MoeSumParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "moe_sum";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "input", p.input));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "out", p.out.dtype, p.input.dtype));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "out", p.out.size(0), 0, "input", p.input.size(0), 0));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "out", p.out.size(1), 1, "input", p.input.size(2), 2));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "tokens", p.out.size(0)));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "topk", p.input.size(1)));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "hidden", p.out.size(1)));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(op, {detail::span_of("out", p.out)}, {detail::span_of("input", p.input)}));
  if (p.out.numel() == 0) return Status::kSuccess;
  namespace k = detail::kernels::moe_sum;
  const k::Inputs in{.out_ptr = detail::strided(p.out.data, p.out.stride(0)),
                     .in_ptr = detail::strided(p.input.data, p.input.stride(0), p.input.stride(1)),
                     .topk_ids_ptr = nullptr, .expert_map_ptr = nullptr, .n_tokens = p.out.size(0),
                     .topk = p.input.size(1), .hidden = p.out.size(1), .rows_per_slot = 0,  // every row summed
                     .num_experts = 0, .expert_map_len = 0};
  k::Functional f{p.input.dtype};
  return k::launch(in, f, stream, options);
} catch (...) {
  return detail::fail_exception("moe_sum: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
