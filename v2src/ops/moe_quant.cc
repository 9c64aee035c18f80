// fp8 activation quantization (per token group, per tensor with a static or
// dynamic scale) and the dropped-row zeroing fused_experts needs.
#include <algorithm>
#include <string>

#include "fp8_amax_partial.h"
#include "fp8_dynamic_amax_chunks.h"
#include "fp8_dynamic_quant_chunks.h"
#include "fp8_scale_from_amax.h"
#include "moe_internal.h"
#include "moe_zero_dropped_rows.h"
#include "per_tensor_quant_fp8.h"
#include "per_token_group_quant_fp8.h"
#include "per_token_quant_fp8.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;
using detail::fail;

namespace detail {

namespace {

Status check_quant_ints(const char* op, const QuantJob& j) {
  for (auto [what, v] : {std::pair{"rows", j.M}, {"columns", j.K}, {"x row stride", j.stride_xm},
                         {"q row stride", j.stride_qm}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  return Status::kSuccess;
}

bool quant_aligned(const QuantJob& j) {
  return j.K % 16 == 0 && j.stride_xm % 16 == 0 && j.stride_qm % 16 == 0 && aligned16(j.x) && aligned16(j.q);
}

}  // namespace

Status launch_group_quant(const char* op, const QuantJob& j, float* scales, int64_t stride_sm, int64_t stride_sk,
                          Stream stream, const KernelOptions* options) {
  AOTRITON_RETURN_IF_ERROR(check_quant_ints(op, j));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "scales strides", std::max(stride_sm, stride_sk)));
  if (j.M == 0 || j.K == 0) return Status::kSuccess;
  namespace k = detail::kernels::per_token_group_quant_fp8;
  const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .q_ptr = detail::strided(j.q, j.stride_qm),
                     .s_ptr = detail::strided(scales, stride_sm, stride_sk), .M = j.M, .K = j.K};
  return k::launch(in, k::Functional{j.x_dtype, kScaleGroup, quant_aligned(j)}, stream, options);
}

Status launch_tensor_quant(const char* op, const QuantJob& j, const float* scale, Stream stream,
                           const KernelOptions* options) {
  AOTRITON_RETURN_IF_ERROR(check_quant_ints(op, j));
  if (j.M == 0 || j.K == 0) return Status::kSuccess;
  namespace k = detail::kernels::per_tensor_quant_fp8;
  const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .q_ptr = detail::strided(j.q, j.stride_qm),
                     .scale_ptr = scale, .M = j.M, .K = j.K};
  return k::launch(in, k::Functional{j.x_dtype, quant_aligned(j)}, stream, options);
}

Status launch_token_quant(const char* op, const QuantJob& j, float* scales, Stream stream,
                          const KernelOptions* options) {
  AOTRITON_RETURN_IF_ERROR(check_quant_ints(op, j));
  if (j.M == 0 || j.K == 0) return Status::kSuccess;
  if (!quant_aligned(j))  // the kernel is built for aligned shapes only (python/rules_moe.py)
    return fail(Status::kUnsupported, std::string(op) + ": per-token fp8 quantization needs K, the row strides and "
                                                        "the pointers of x and q to be multiples of 16");
  namespace k = detail::kernels::per_token_quant_fp8;
  const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .q_ptr = detail::strided(j.q, j.stride_qm),
                     .s_ptr = scales, .M = j.M, .K = j.K};
  return k::launch(in, k::Functional{j.x_dtype}, stream, options);
}

int32_t dynamic_scale_partials(int64_t rows) {
  // One partial maximum per program; enough programs to fill an H100 a few times,
  // and no more than the partials buffer both routes share holds.
  return static_cast<int32_t>(std::clamp<int64_t>(rows, 1, kDynamicQuantMaxChunks));
}

// The chunked kernels are built for 16-byte aligned rows (decode's inputs); others take three launches.
bool dynamic_quant_chunked(const QuantJob& j) {
  return j.M >= 0 && j.K >= 0 && j.M * cdiv(j.K, kDynamicQuantChunk) <= kDynamicQuantMaxChunks && quant_aligned(j);
}

Status launch_dynamic_quant_chunks(const char* op, const QuantJob& j, float* partials, float* scale, Stream stream,
                                   int32_t activation, const SlotFilter& slots) {
  AOTRITON_RETURN_IF_ERROR(check_quant_ints(op, j));
  if (activation >= 0 && !slots.topk_ids)
    return fail(Status::kInvalidArgument, std::string(op) + ": internal: fused activation without its slots' ids");
  for (auto [what, v] : {std::pair{"experts", slots.num_experts}, {"expert map entries", slots.expert_map_len}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  // M or K 0: one program of each step, no chunk; the scale is the floor's, as launch_dynamic_scale's.
  {
    namespace k = detail::kernels::fp8_dynamic_amax_chunks;
    const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .partial_ptr = partials,
                       .topk_ids_ptr = slots.topk_ids, .expert_map_ptr = slots.expert_map, .M = j.M, .K = j.K,
                       .num_experts = slots.num_experts, .expert_map_len = slots.expert_map_len};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{j.x_dtype, activation}, stream, nullptr));
  }
  namespace k = detail::kernels::fp8_dynamic_quant_chunks;
  const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .q_ptr = detail::strided(j.q, j.stride_qm),
                     .scale_ptr = scale, .partial_ptr = partials, .M = j.M, .K = j.K};
  return k::launch(in, k::Functional{j.x_dtype, activation}, stream, nullptr);
}

Status launch_dynamic_scale(const char* op, const QuantJob& j, float* partials, float* scale, Stream stream) {
  AOTRITON_RETURN_IF_ERROR(check_quant_ints(op, j));
  const int32_t np = dynamic_scale_partials(j.M);
  {
    namespace k = detail::kernels::fp8_amax_partial;
    const k::Inputs in{.x_ptr = detail::strided(j.x, j.stride_xm), .partial_ptr = partials, .M = j.M, .K = j.K,
                       .num_partials = np};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{j.x_dtype}, stream, nullptr));
  }
  namespace k = detail::kernels::fp8_scale_from_amax;
  const k::Inputs in{.partial_ptr = partials, .scale_ptr = scale, .num_partials = np};
  return k::launch(in, k::Functional{DType::kFloat32}, stream, nullptr);
}

Status launch_zero_dropped_rows(const char* op, void* buf, DType dtype, int64_t rows, int64_t cols,
                                int64_t stride_row, const int32_t* topk_ids, const int32_t* expert_map,
                                int64_t expert_map_len, int64_t num_experts, Stream stream) {
  for (auto [what, v] : {std::pair{"rows", rows}, {"columns", cols}, {"row stride", stride_row}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  if (rows == 0 || cols == 0) return Status::kSuccess;
  namespace k = detail::kernels::moe_zero_dropped_rows;
  const k::Inputs in{.buf_ptr = detail::strided(buf, stride_row), .topk_ids_ptr = topk_ids,
                     .expert_map_ptr = expert_map, .rows = rows, .cols = cols, .num_experts = num_experts,
                     .expert_map_len = expert_map_len};
  return k::launch(in, k::Functional{dtype, expert_map != nullptr}, stream, nullptr);
}

}  // namespace detail

namespace {

Status check_x_q(const char* op, const TensorView<2>& x, const TensorView<2>& q) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "x", x));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "q", q));
  if (x.dtype != DType::kFloat16 && x.dtype != DType::kBFloat16 && x.dtype != DType::kFloat32)
    return fail(Status::kInvalidArgument, std::string(op) + ": x is " + dtype_name(x.dtype) +
                                              ", expected fp16, bf16 or fp32");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "q", q.dtype, DType::kFloat8E4M3));
  for (int i = 0; i < 2; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "q", q.size(i), i, "x", x.size(i), i));
  // q is written row by row in parallel: rows sharing memory would race.
  return detail::check_no_self_overlap(op, "q", q);
}

detail::QuantJob job_of(const TensorView<2>& x, const TensorView<2>& q) {
  return {x.data, x.dtype, q.data, x.size(0), x.size(1), x.stride(0), q.stride(0)};
}

}  // namespace

Status per_token_group_quant_fp8(const PerTokenGroupQuantParams& p, Stream stream,
                                 const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "per_token_group_quant_fp8";
  AOTRITON_RETURN_IF_ERROR(check_x_q(op, p.x, p.q));
  if (p.group_size != detail::kScaleGroup)
    return fail(Status::kUnsupported, std::string(op) + ": group_size must be 128");
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "scales", p.scales, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "scales", p.scales.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "scales", p.scales.size(0), 0, "x", p.x.size(0), 0));
  const int64_t groups = detail::cdiv(p.x.size(1), detail::kScaleGroup);
  if (p.scales.size(1) != groups)
    return fail(Status::kInvalidArgument, std::string(op) + ": scales.size(1) = " + std::to_string(p.scales.size(1)) +
                                              " but cdiv(x.size(1), 128) = " + std::to_string(groups));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "scales", p.scales));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("q", p.q), detail::span_of("scales", p.scales)}, {detail::span_of("x", p.x)}));
  return detail::launch_group_quant(op, job_of(p.x, p.q), static_cast<float*>(p.scales.data), p.scales.stride(0),
                                      p.scales.stride(1), stream, options);
} catch (...) {
  return detail::fail_exception("per_token_group_quant_fp8: unexpected exception");
}

Status per_token_quant_fp8(const PerTokenQuantParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "per_token_quant_fp8";
  AOTRITON_RETURN_IF_ERROR(check_x_q(op, p.x, p.q));
  if (p.x.dtype == DType::kFloat32)
    return fail(Status::kUnsupported, std::string(op) + ": x must be fp16 or bf16 (fp32 is not built)");
  if (!p.scales.data) return fail(Status::kInvalidArgument, std::string(op) + ": scales is a null pointer");
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "scales", p.scales));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "scales", p.scales.dtype, DType::kFloat32));
  if (p.scales.size(0) != p.x.size(0) || p.scales.size(1) != 1 || !detail::is_contiguous(p.scales))
    return fail(Status::kInvalidArgument, std::string(op) + ": scales must be contiguous [x.size(0), 1] = [" +
                                              std::to_string(p.x.size(0)) + ", 1], has shape " +
                                              detail::shape_string(p.scales.sizes.data(), 2));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("q", p.q), detail::span_of("scales", p.scales)}, {detail::span_of("x", p.x)}));
  return detail::launch_token_quant(op, job_of(p.x, p.q), static_cast<float*>(p.scales.data), stream, options);
} catch (...) {
  return detail::fail_exception("per_token_quant_fp8: unexpected exception");
}

size_t per_tensor_quant_workspace_size(int64_t rows) noexcept {
  detail::Carver c(nullptr);
  (void)rows;  // either route's partials fit the one buffer
  c.take<float>(detail::kDynamicQuantMaxChunks);
  return c.size();
}

Status per_tensor_quant_fp8(const PerTensorQuantParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "per_tensor_quant_fp8";
  AOTRITON_RETURN_IF_ERROR(check_x_q(op, p.x, p.q));
  if (!p.scale.data) return fail(Status::kInvalidArgument, std::string(op) + ": scale is a null pointer");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "scale", p.scale.dtype, DType::kFloat32));
  if (p.scale.size(0) != 1)
    return fail(Status::kInvalidArgument, std::string(op) + ": scale must have exactly 1 element");
  detail::QuantJob j = job_of(p.x, p.q);
  float* scale = static_cast<float*>(p.scale.data);
  if (p.dynamic_scale) {
    AOTRITON_RETURN_IF_ERROR(detail::check_workspace(op, p.workspace, p.workspace_bytes,
                                                       per_tensor_quant_workspace_size(j.M)));
    AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
        op,
        {detail::span_of("q", p.q), detail::span_of("scale", p.scale),
         detail::bytes_of("workspace", p.workspace, per_tensor_quant_workspace_size(j.M))},
        {detail::span_of("x", p.x)}));
  } else {
    AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(op, {detail::span_of("q", p.q)},
                                                      {detail::span_of("x", p.x), detail::span_of("scale", p.scale)}));
  }
  return detail::resolve_then_launch([&] {
    if (p.dynamic_scale && !options && detail::dynamic_quant_chunked(j))
      return detail::launch_dynamic_quant_chunks(op, j, static_cast<float*>(p.workspace), scale, stream);
    if (p.dynamic_scale)
      AOTRITON_RETURN_IF_ERROR(detail::launch_dynamic_scale(op, j, static_cast<float*>(p.workspace), scale, stream));
    return detail::launch_tensor_quant(op, j, scale, stream, options);
  });
} catch (...) {
  return detail::fail_exception("per_tensor_quant_fp8: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
