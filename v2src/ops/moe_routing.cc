// MoE routing: top-k softmax and moe_align_block_size.
#include <cstdint>
#include <string>

#include "moe_align_count.h"
#include "moe_align_offsets.h"
#include "moe_align_scan.h"
#include "moe_align_scatter.h"
#include "moe_align_small.h"
#include "moe_internal.h"
#include "resolve_first.h"
#include "topk_softmax.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_tensor;
using detail::fail;

namespace detail {

Status check_workspace(const char* op, const void* workspace, size_t have, size_t need) {
  if (need == 0) return Status::kSuccess;
  if (!workspace)
    return fail(Status::kInvalidArgument, std::string(op) + ": workspace is null but " + std::to_string(need) +
                                              " bytes are needed");
  if (!aligned16(workspace))
    return fail(Status::kInvalidArgument, std::string(op) + ": workspace must be 16-byte aligned");
  if (have < need)
    return fail(Status::kInvalidArgument, std::string(op) + ": workspace_bytes = " + std::to_string(have) +
                                              " but " + std::to_string(need) + " are needed");
  return Status::kSuccess;
}

namespace {

struct AlignLayout {
  int32_t* chunk_counts;
  int32_t* expert_counts;
  int32_t* expert_starts;
  size_t bytes;
};

AlignLayout align_layout(void* base, int64_t numel, int64_t num_experts) {
  Carver c(base);
  AlignLayout l{nullptr, nullptr, nullptr, 0};
  if (numel > kAlignSmallMax) {
    l.chunk_counts = c.take<int32_t>(cdiv(numel, kAlignBlockT) * num_experts);
    l.expert_counts = c.take<int32_t>(num_experts);
    l.expert_starts = c.take<int32_t>(num_experts + 1);
  }
  l.bytes = c.size();
  return l;
}

}  // namespace

Status launch_align(const char* op, const AlignJob& j, Stream stream) {
  if (j.num_experts < 1 || j.num_experts > kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": num_experts = " + std::to_string(j.num_experts) +
                                          " must be in [1, " + std::to_string(kMaxExperts) + "]");
  // Block size 1 (no padding) is the expert-parallel dispatch's grouping (moe_ep.cc).
  if (j.block_size != 1 && !is_gemm_block_size(j.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": block_size = " + std::to_string(j.block_size) +
                                              " must be 16, 32, 64 or 128");
  const int64_t max_padded = moe_align_max_padded(j.numel, j.num_experts, j.block_size);
  const int64_t num_blocks = cdiv(max_padded, j.block_size);
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "topk_ids numel + num_experts * (block_size - 1)", max_padded));
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "expert_map length", j.expert_map_len));
  const int32_t numel = static_cast<int32_t>(j.numel), E = static_cast<int32_t>(j.num_experts);
  const int32_t map_len = static_cast<int32_t>(j.expert_map_len);
  const int32_t block_e = pow2_at_least(E, 16);
  const bool has_map = j.expert_map != nullptr;
  if (j.numel <= kAlignSmallMax) {
    namespace k = detail::kernels::moe_align_small;
    const k::Inputs in{.topk_ids_ptr = j.topk_ids, .expert_map_ptr = j.expert_map,
                       .sorted_token_ids_ptr = j.sorted_token_ids, .expert_ids_ptr = j.expert_ids,
                       .num_tokens_post_padded_ptr = j.num_tokens_post_padded, .numel = numel, .num_experts = E,
                       .block_size = j.block_size, .max_num_tokens_padded = max_padded,
                       .num_blocks_total = num_blocks, .expert_map_len = map_len};
    k::Functional f{has_map, block_e, numel <= 64 ? 64 : (numel <= 256 ? 256 : 1024)};
    return k::launch(in, f, stream, j.options);
  }
  // chunk_counts [num_chunks, E] is indexed chunk * E + e in int32 (above ~2^30 slots it would wrap).
  AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "align chunk counters, cdiv(topk_ids numel, 256) * num_experts",
                                                    cdiv(j.numel, kAlignBlockT), j.num_experts, j.num_experts));
  AlignLayout l = align_layout(j.workspace, j.numel, j.num_experts);
  const int32_t num_chunks = static_cast<int32_t>(cdiv(j.numel, kAlignBlockT));
  {
    namespace k = detail::kernels::moe_align_count;
    const k::Inputs in{.topk_ids_ptr = j.topk_ids, .expert_map_ptr = j.expert_map, .chunk_counts_ptr = l.chunk_counts,
                       .sorted_token_ids_ptr = j.sorted_token_ids, .numel = numel, .num_experts = E,
                       .max_num_tokens_padded = max_padded, .expert_map_len = map_len};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{has_map, block_e, kAlignBlockT}, stream, nullptr));
  }
  {
    namespace k = detail::kernels::moe_align_scan;
    const k::Inputs in{.chunk_counts_ptr = l.chunk_counts, .expert_counts_ptr = l.expert_counts,
                       .num_chunks = num_chunks, .num_experts = E};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{DType::kInt32}, stream, nullptr));
  }
  {
    namespace k = detail::kernels::moe_align_offsets;
    const k::Inputs in{.expert_counts_ptr = l.expert_counts, .expert_starts_ptr = l.expert_starts,
                       .num_tokens_post_padded_ptr = j.num_tokens_post_padded, .num_experts = E,
                       .block_size = j.block_size};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{block_e}, stream, nullptr));
  }
  namespace k = detail::kernels::moe_align_scatter;
  const k::Inputs in{.topk_ids_ptr = j.topk_ids, .expert_map_ptr = j.expert_map, .chunk_counts_ptr = l.chunk_counts,
                     .expert_starts_ptr = l.expert_starts, .sorted_token_ids_ptr = j.sorted_token_ids,
                     .expert_ids_ptr = j.expert_ids, .numel = numel, .num_experts = E, .block_size = j.block_size,
                     .num_blocks_total = num_blocks, .expert_map_len = map_len};
  return k::launch(in, k::Functional{has_map, block_e, kAlignBlockT}, stream, j.options);
}

Status check_expert_map(const char* op, const TensorView<1>& map, int64_t num_experts) {
  if (!map.data) return Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "expert_map", map));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "expert_map", map.dtype, DType::kInt32));
  if (!is_contiguous(map)) return fail(Status::kInvalidArgument, std::string(op) + ": expert_map must be contiguous");
  if (map.size(0) < num_experts)
    return fail(Status::kInvalidArgument, std::string(op) + ": expert_map has " + std::to_string(map.size(0)) +
                                              " entries but maps onto " + std::to_string(num_experts) +
                                              " local experts; it needs one entry per global expert (at least " +
                                              std::to_string(num_experts) + ")");
  return check_i32(op, "expert_map length", map.size(0));
}

}  // namespace detail

using detail::is_contiguous;

Status topk_softmax(const TopkSoftmaxParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "topk_softmax";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "logits", p.logits, false));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_weights", p.topk_weights));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_ids", p.topk_ids));
  DType ld = p.logits.dtype;
  if (ld != DType::kFloat16 && ld != DType::kBFloat16 && ld != DType::kFloat32)
    return fail(Status::kInvalidArgument, std::string(op) + ": logits is " + dtype_name(ld) +
                                              ", expected fp16, bf16 or fp32");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", p.topk_weights.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  const int64_t M = p.logits.size(0), E = p.logits.size(1), topk = p.topk_weights.size(1);
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_weights", p.topk_weights.size(0), 0, "logits", M, 0));
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_ids", p.topk_ids.size(0), 0, "logits", M, 0));
  AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "topk_ids", p.topk_ids.size(1), 1, "topk_weights", topk, 1));
  if (E < 1 || E > detail::kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": logits.size(1) (experts) = " + std::to_string(E) +
                                          " must be in [1, 512]");
  if (topk < 1 || topk > E)
    return fail(Status::kInvalidArgument, std::string(op) + ": topk = " + std::to_string(topk) +
                                              " must be in [1, experts = " + std::to_string(E) + "]");
  for (auto [what, v] : {std::pair{"tokens", M}, {"logits.stride(0)", p.logits.stride(0)},
                         {"logits.stride(1)", p.logits.stride(1)}, {"topk_weights.stride(0)", p.topk_weights.stride(0)},
                         {"topk_ids.stride(0)", p.topk_ids.stride(0)}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  // The kernel adds expert * stride(1) in int32 (column-major logits have a large one).
  AOTRITON_RETURN_IF_ERROR(
      detail::check_i32_offset(op, "logits expert offset, (experts - 1) * stride(1) + 1", E, p.logits.stride(1), 1));
  for (auto [name, t] : {std::pair{"topk_weights", &p.topk_weights}, {"topk_ids", &p.topk_ids}})
    AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, name, *t));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("topk_weights", p.topk_weights), detail::span_of("topk_ids", p.topk_ids)},
      {detail::span_of("logits", p.logits)}));
  if (M == 0) return Status::kSuccess;
  namespace k = detail::kernels::topk_softmax;
  const k::Inputs in{.logits_ptr = detail::strided(p.logits.data, p.logits.stride(0), p.logits.stride(1)),
                     .topk_weights_ptr = detail::strided(p.topk_weights.data, p.topk_weights.stride(0)),
                     .topk_ids_ptr = detail::strided(p.topk_ids.data, p.topk_ids.stride(0)),
                     .num_tokens = M, .num_experts = E, .topk = topk};
  k::Functional f{ld, p.renormalize, detail::pow2_at_least(E, 8)};
  return k::launch(in, f, stream, options);
} catch (...) {
  return detail::fail_exception("topk_softmax: unexpected exception");
}

// The size helpers take raw integers: they never overflow. max_padded is 0 for
// negative arguments and saturates at INT64_MAX (a size every check refuses);
// the workspace size is 0 outside what moe_align_block_size accepts (int32 sizes).
int64_t moe_align_max_padded(int64_t numel, int64_t num_experts, int64_t block_size) noexcept {
  if (numel < 0 || num_experts < 0 || block_size < 1) return 0;
  if (num_experts > 0 && block_size - 1 > (INT64_MAX - numel) / num_experts) return INT64_MAX;
  return numel + num_experts * (block_size - 1);
}

size_t moe_align_workspace_size(int64_t numel, int64_t num_experts) noexcept {
  if (numel < 0 || numel > INT32_MAX || num_experts < 0 || num_experts > INT32_MAX) return 0;
  return detail::align_layout(nullptr, numel, num_experts).bytes;
}

namespace {

Status check_int_vector(const char* op, const char* name, const TensorView<1>& t, int64_t min_size) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, DType::kInt32));
  if (t.size(0) < min_size)
    return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " has " + std::to_string(t.size(0)) +
                                              " elements, needs at least " + std::to_string(min_size));
  if (!t.data) return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is a null pointer");
  return Status::kSuccess;
}

}  // namespace

Status moe_align_block_size(const MoeAlignParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "moe_align_block_size";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_ids", p.topk_ids));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  if (!is_contiguous(p.topk_ids))
    return fail(Status::kInvalidArgument, std::string(op) + ": topk_ids must be contiguous");
  const int64_t numel = p.topk_ids.numel();
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "topk_ids numel", numel));
  if (p.num_experts < 1 || p.num_experts > detail::kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": num_experts = " + std::to_string(p.num_experts) +
                                          " must be in [1, 512]");
  if (!detail::is_gemm_block_size(p.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": block_size = " + std::to_string(p.block_size) +
                                              " must be 16, 32, 64 or 128");
  const int64_t max_padded = moe_align_max_padded(numel, p.num_experts, p.block_size);
  AOTRITON_RETURN_IF_ERROR(check_int_vector(op, "sorted_token_ids", p.sorted_token_ids, max_padded));
  AOTRITON_RETURN_IF_ERROR(
      check_int_vector(op, "expert_ids", p.expert_ids, detail::cdiv(max_padded, p.block_size)));
  AOTRITON_RETURN_IF_ERROR(check_int_vector(op, "num_tokens_post_padded", p.num_tokens_post_padded, 1));
  AOTRITON_RETURN_IF_ERROR(detail::check_expert_map(op, p.expert_map, p.num_experts));
  AOTRITON_RETURN_IF_ERROR(detail::check_workspace(op, p.workspace, p.workspace_bytes,
                                                     moe_align_workspace_size(numel, p.num_experts)));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op,
      {detail::span_of("sorted_token_ids", p.sorted_token_ids), detail::span_of("expert_ids", p.expert_ids),
       detail::span_of("num_tokens_post_padded", p.num_tokens_post_padded),
       detail::bytes_of("workspace", p.workspace, moe_align_workspace_size(numel, p.num_experts))},
      {detail::span_of("topk_ids", p.topk_ids), detail::span_of("expert_map", p.expert_map)}));
  detail::AlignJob j{static_cast<const int32_t*>(p.topk_ids.data),
                       static_cast<const int32_t*>(p.expert_map.data),
                       numel,
                       p.num_experts,
                       p.block_size,
                       static_cast<int32_t*>(p.sorted_token_ids.data),
                       static_cast<int32_t*>(p.expert_ids.data),
                       static_cast<int32_t*>(p.num_tokens_post_padded.data),
                       p.workspace,
                       p.expert_map.data ? p.expert_map.size(0) : 0,
                       options};
  return detail::resolve_then_launch([&] { return detail::launch_align(op, j, stream); });
} catch (...) {
  return detail::fail_exception("moe_align_block_size: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
