// Expert-parallel dispatch/combine indices: moe_align at block size 1, then
// one kernel that writes tokens, the inverse permutation and expert offsets.
#include <cstdint>
#include <string>

#include "ep_dispatch_indices.h"
#include "moe_internal.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_tensor;
using detail::fail;

namespace {

constexpr const char* kOp = "ep_dispatch";

struct EpLayout {
  int32_t* sorted_slots;      // [numel]: moe_align's sorted_token_ids at block size 1
  int32_t* position_experts;  // [numel]: moe_align's expert_ids at block size 1
  int32_t* total;             // [1]
  void* align_ws;
  size_t bytes;
};

EpLayout ep_layout(void* base, int64_t numel, int64_t num_local) {
  detail::Carver c(base);
  EpLayout l{};
  l.sorted_slots = c.take<int32_t>(numel);
  l.position_experts = c.take<int32_t>(numel);
  l.total = c.take<int32_t>(1);
  l.align_ws = c.take_bytes(static_cast<int64_t>(moe_align_workspace_size(numel, num_local)));
  l.bytes = c.size();
  return l;
}

Status bad(const std::string& what) { return fail(Status::kInvalidArgument, std::string(kOp) + ": " + what); }

Status check_output(const char* name, const int64_t* sizes, const int64_t* want, int rank) {
  for (int i = 0; i < rank; ++i)
    if (sizes[i] != want[i])
      return bad(std::string(name) + " has shape " + detail::shape_string(sizes, rank) + ", expected " +
                 detail::shape_string(want, rank));
  return Status::kSuccess;
}

}  // namespace

size_t ep_dispatch_workspace_size(int64_t numel, int64_t num_local_experts) noexcept {
  if (numel < 0 || numel > INT32_MAX || num_local_experts < 0 || num_local_experts > INT32_MAX)
    return 0;  // no call accepts these (ep_dispatch checks both); 0, not an overflowed size
  return ep_layout(nullptr, numel, num_local_experts).bytes;
}

Status ep_dispatch(const EpDispatchParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = kOp;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_ids", p.topk_ids));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  if (!detail::is_contiguous(p.topk_ids)) return bad("topk_ids must be contiguous");
  const int64_t M = p.topk_ids.size(0), topk = p.topk_ids.size(1), numel = p.topk_ids.numel();
  AOTRITON_RETURN_IF_ERROR(check_i32(op, "topk_ids numel", numel));
  if (topk < 1) return bad("topk_ids.size(1) (top-k) must be >= 1");
  const int64_t L = p.num_local_experts;
  if (L < 1 || L > detail::kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": num_local_experts = " + std::to_string(L) +
                                          " must be in [1, " + std::to_string(detail::kMaxExperts) + "]");
  AOTRITON_RETURN_IF_ERROR(detail::check_expert_map(op, p.expert_map, L));
  const struct {
    const char* name;
    const void* data;
    DType dtype;
    bool contiguous;
  } outs[] = {{"sorted_token_ids", p.sorted_token_ids.data, p.sorted_token_ids.dtype,
               detail::is_contiguous(p.sorted_token_ids)},
              {"inverse", p.inverse.data, p.inverse.dtype, detail::is_contiguous(p.inverse)},
              {"expert_offsets", p.expert_offsets.data, p.expert_offsets.dtype,
               detail::is_contiguous(p.expert_offsets)}};
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "sorted_token_ids", p.sorted_token_ids));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "inverse", p.inverse));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "expert_offsets", p.expert_offsets));
  for (const auto& o : outs) {
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, o.name, o.dtype, DType::kInt32));
    if (!o.contiguous) return bad(std::string(o.name) + " must be contiguous");
    if (!o.data) return bad(std::string(o.name) + " is a null pointer");
  }
  const int64_t want_sorted[1] = {numel}, want_inverse[2] = {M, topk}, want_offsets[1] = {L + 1};
  AOTRITON_RETURN_IF_ERROR(check_output("sorted_token_ids", p.sorted_token_ids.sizes.data(), want_sorted, 1));
  AOTRITON_RETURN_IF_ERROR(check_output("inverse", p.inverse.sizes.data(), want_inverse, 2));
  AOTRITON_RETURN_IF_ERROR(check_output("expert_offsets", p.expert_offsets.sizes.data(), want_offsets, 1));
  const size_t need = ep_dispatch_workspace_size(numel, L);
  AOTRITON_RETURN_IF_ERROR(detail::check_workspace(op, p.workspace, p.workspace_bytes, need));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op,
      {detail::span_of("sorted_token_ids", p.sorted_token_ids), detail::span_of("inverse", p.inverse),
       detail::span_of("expert_offsets", p.expert_offsets), detail::bytes_of("workspace", p.workspace, need)},
      {detail::span_of("topk_ids", p.topk_ids), detail::span_of("expert_map", p.expert_map)}));
  const EpLayout l = ep_layout(p.workspace, numel, L);
  const auto* ids = static_cast<const int32_t*>(p.topk_ids.data);
  const auto* emap = static_cast<const int32_t*>(p.expert_map.data);
  const int64_t map_len = emap ? p.expert_map.size(0) : 0;
  detail::AlignJob aj{ids, emap, numel, L, 1, l.sorted_slots, l.position_experts, l.total, l.align_ws, map_len};
  return detail::resolve_then_launch([&]() -> Status {
    AOTRITON_RETURN_IF_ERROR(detail::launch_align(op, aj, stream));
    namespace k = detail::kernels::ep_dispatch_indices;
    const k::Inputs in{.topk_ids_ptr = ids, .expert_map_ptr = emap, .sorted_slots_ptr = l.sorted_slots,
                       .position_experts_ptr = l.position_experts, .total_ptr = l.total,
                       .sorted_token_ids_ptr = p.sorted_token_ids.data, .inverse_ptr = p.inverse.data,
                       .expert_offsets_ptr = p.expert_offsets.data, .numel = numel, .topk = topk,
                       .num_local_experts = L, .expert_map_len = map_len};
    return k::launch(in, k::Functional{emap != nullptr}, stream, options);
  });
} catch (...) {
  return detail::fail_exception("ep_dispatch: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
