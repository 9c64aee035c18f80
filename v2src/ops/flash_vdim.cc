#include "flash_vdim.h"

#include <iterator>
#include <string>

#include "aotriton_tables.h"
#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {

using detail::fail;
namespace tables = detail::tables;

namespace {
std::string supported_pairs() {
  std::string s;
  for (size_t i = 0; i < std::size(tables::kVdimV); ++i) {
    const int64_t lo = tables::kVdimQkMin[i], hi = tables::kVdimQkMax[i];
    s += (i ? "; " : "") + std::string("q/k head dim ") +
         (lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi) + " (a multiple of 8)") +
         " with v head dim " + std::to_string(tables::kVdimV[i]);
  }
  return s + " (fp16/bf16, without dropout, sliding window, softcap or ALiBi)";
}
}  // namespace

Status resolve_head_dim_v(const char* op, int64_t head_dim, int64_t head_dim_v, DType dtype, bool dropout,
                          bool features, int32_t* block_dv) {
  *block_dv = 0;
  if (head_dim_v == head_dim) return Status::kSuccess;
  bool pair = false;
  for (size_t i = 0; i < std::size(tables::kVdimV); ++i)
    pair |= head_dim_v == tables::kVdimV[i] && head_dim >= tables::kVdimQkMin[i] &&
            head_dim <= tables::kVdimQkMax[i] && head_dim % 8 == 0;
  const char* why = nullptr;  // what makes the call unsupported
  if (!pair)
    why = "";
  else if (dtype == DType::kFloat32)
    why = " in fp32";
  else if (dropout)
    why = " with dropout";
  else if (features)
    why = " with sliding window, softcap or ALiBi";
  if (why)
    return fail(Status::kUnsupported, std::string(op) + ": v head dim " + std::to_string(head_dim_v) +
                                          " with q/k head dim " + std::to_string(head_dim) + why +
                                          " is not supported; supported: " + supported_pairs());
  *block_dv = static_cast<int32_t>(head_dim_v);
  return Status::kSuccess;
}

template <int R>
static Status check_impl(const char* op, const char* name, const TensorView<R>& t, const TensorView<R>& q,
                         const TensorView<R>& v) {
  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(op, name, t));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(op, name, t.dtype, q.dtype));
  for (int i = 0; i < R - 1; ++i)
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, name, t.size(i), i, "q", q.size(i), i));
  return detail::check_same_dim(op, name, t.size(R - 1), R - 1, "v", v.size(R - 1), R - 1);
}

Status check_like_q_with_v_dim(const char* op, const char* name, const TensorView<4>& t, const TensorView<4>& q,
                               const TensorView<4>& v) {
  return check_impl(op, name, t, q, v);
}
Status check_like_q_with_v_dim(const char* op, const char* name, const TensorView<3>& t, const TensorView<3>& q,
                               const TensorView<3>& v) {
  return check_impl(op, name, t, q, v);
}

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
