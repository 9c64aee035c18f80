#include "flash_features.h"

#include <cmath>
#include <string>

#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {

using detail::fail;

namespace {
Status check_slopes(const char* op, const TensorView<2>& s, int64_t batch, int64_t hq) {
  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(op, "alibi_slopes", s, /*inner_contiguous=*/false));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(op, "alibi_slopes", s.dtype, DType::kFloat32));
  if ((s.size(0) != 1 && s.size(0) != batch) || s.size(1) != hq)
    return fail(Status::kInvalidArgument, std::string(op) + ": alibi_slopes must be [num_heads_q] or [batch, " +
                                              "num_heads_q] = [" + std::to_string(batch) + ", " +
                                              std::to_string(hq) + "], got [" + std::to_string(s.size(0)) + ", " +
                                              std::to_string(s.size(1)) + "]");
  if (hq > 1 && s.stride(1) != 1)
    return fail(Status::kInvalidArgument, std::string(op) + ": alibi_slopes must be contiguous along the heads");
  if (s.size(0) == 1) return Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(op, "alibi_slopes batch stride", s.stride(0)));
  // The kernels add batch * stride(0) + head in int32 (tritonsrc/flash/fwd.py, bwd_dkdv.py).
  return detail::check_i32_offset(op, "alibi_slopes offset, (batch - 1) * stride(0) + num_heads_q", s.size(0),
                                  s.stride(0), hq);
}
}  // namespace

Status resolve_features(const char* op, const Features& f, CausalType causal, DType dtype, bool dropout,
                        int64_t batch, int64_t hq, KernelFeatures* out) {
  *out = KernelFeatures{};
  out->causal_type = static_cast<int32_t>(causal);
  if (f.window_left < -1 || f.window_right < -1)
    return fail(Status::kInvalidArgument, std::string(op) + ": window_left / window_right must be >= -1 " +
                                              "(-1 = unbounded), got (" + std::to_string(f.window_left) + ", " +
                                              std::to_string(f.window_right) + ")");
  if (!(f.softcap >= 0.f) || !std::isfinite(f.softcap))
    return fail(Status::kInvalidArgument, std::string(op) + ": softcap must be a finite number >= 0");
  const bool alibi = f.alibi_slopes.data != nullptr;
  if (alibi && f.softcap > 0.f)
    return fail(Status::kInvalidArgument, std::string(op) + ": softcap and alibi_slopes cannot be combined");
  if (alibi) AOTRITON_RETURN_IF_ERROR(check_slopes(op, f.alibi_slopes, batch, hq));
  const bool window = f.window_left >= 0 || f.window_right >= 0;
  if (!window && f.softcap == 0.f && !alibi) return Status::kSuccess;
  if (dtype == DType::kFloat32)
    return fail(Status::kUnsupported, std::string(op) + ": sliding window, softcap and ALiBi need fp16 or bf16");
  if (dropout)
    return fail(Status::kUnsupported, std::string(op) + ": sliding window, softcap and ALiBi do not support dropout");
  out->local_window = true;
  out->score_mod = f.softcap > 0.f ? 1 : (alibi ? 2 : 0);
  out->causal_type = 0;
  out->window_left = f.window_left;
  out->window_right = causal == CausalType::kNone ? f.window_right : 0;
  out->window_align = causal == CausalType::kTopLeft ? 0 : 1;
  out->softcap = f.softcap;
  if (alibi) {
    out->alibi = static_cast<const float*>(f.alibi_slopes.data);
    out->alibi_z = f.alibi_slopes.size(0) == 1 ? 0 : f.alibi_slopes.stride(0);
  }
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
