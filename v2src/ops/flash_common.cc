#include "flash_common.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "aotriton_tables.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;
using detail::fail;

int32_t head_dim_bucket(int64_t d) {
  for (int32_t b : detail::tables::kHeadDimBuckets)
    if (b >= d) return b;
  return 0;  // above kMaxHeadDim: check_geometry refuses it first
}

Status check_geometry(const char* op, const Geometry& g, float scale, float dropout_p, bool dropout,
                      const int64_t* seed, const int64_t* offset, CausalType causal) {
  if (g.head_dim < 1 || g.head_dim > detail::tables::kMaxHeadDim)
    return fail(Status::kUnsupported, std::string(op) + ": head_dim " + std::to_string(g.head_dim) +
                                          " is outside the supported range 1.." +
                                          std::to_string(detail::tables::kMaxHeadDim));
  if (g.hk < 1 || g.hq % g.hk != 0)
    return fail(Status::kInvalidArgument, std::string(op) + ": num_heads_q (" + std::to_string(g.hq) +
                                              ") must be a positive multiple of num_heads_k (" + std::to_string(g.hk) +
                                              ")");
  if (!(scale > 0.f) || !std::isfinite(scale))
    return fail(Status::kInvalidArgument, std::string(op) + ": softmax_scale must be a positive finite number");
  if (!(dropout_p >= 0.f && dropout_p < 1.f))
    return fail(Status::kInvalidArgument, std::string(op) + ": dropout_p must be in [0, 1)");
  if (dropout && (!seed || !offset))
    return fail(Status::kInvalidArgument, std::string(op) + ": dropout needs philox_seed and philox_offset device pointers");
  if (causal != CausalType::kNone && causal != CausalType::kTopLeft && causal != CausalType::kBottomRight)
    return fail(Status::kInvalidArgument, std::string(op) + ": unknown causal type");
  if (g.varlen && (!g.cu_q || !g.cu_k))
    return fail(Status::kInvalidArgument, std::string(op) + ": cu_seqlens_q and cu_seqlens_k are required");
  for (auto [what, v] : {std::pair{"batch", g.batch}, {"num_heads_q", g.hq}, {"max_seqlen_q", g.max_sq},
                         {"max_seqlen_k", g.max_sk}, {"total_q", g.total_q}, {"total_k", g.total_k}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  for (auto [what, v] : {std::pair{"max_seqlen_q", g.max_sq}, {"max_seqlen_k", g.max_sk}})
    if (v > kMaxSeqlen)
      return fail(Status::kUnsupported, std::string(op) + ": " + what + " = " + std::to_string(v) + " exceeds " +
                                            std::to_string(kMaxSeqlen) +
                                            " (2^31 - 1024): the kernels' int32 block index steps past the "
                                            "sequence end");
  return Status::kSuccess;
}

Status check_band(const char* op, const Geometry& g) {
  // Both are <= kMaxSeqlen here (check_geometry): no int64 overflow.
  return check_i32(op, "max_seqlen_q + max_seqlen_k (the int32 key offsets of sliding window, softcap or ALiBi)",
                   g.max_sq + g.max_sk);
}

Status check_dkdv_steps(const char* op, const Geometry& g) {
  // hq <= 2^31 and cdiv(max_sq, 16) <= 2^27 (check_geometry): no int64 overflow.
  const int64_t steps = g.hq / g.hk * ((g.max_sq + 15) / 16);
  return check_i32(op, "num_heads_q / num_heads_k * cdiv(max_seqlen_q, 16) (the int32 step count of the dK/dV "
                       "kernels' loop over a kv head's query heads and row blocks)",
                   steps);
}

Status check_strided(const char* op, const char* name, const Strided& t, int64_t rows, int64_t head_dim) {
  // Messages are built only on failure: this runs on every call.
  for (int64_t s : {t.z, t.h, t.m})
    if (s < 0 || s > std::numeric_limits<int32_t>::max())
      return check_i32(op, (std::string(name) + " stride").c_str(), s);
  // rows and the strides are int32 here: no int64 overflow.
  const int64_t reach = rows * t.m + head_dim;
  if (reach > std::numeric_limits<int32_t>::max())
    return check_i32(op, (std::string(name) + " rows * row stride").c_str(), reach);
  return Status::kSuccess;
}

namespace {
Status check_float_dtype(const char* op, const char* name, DType d) {
  if (d == DType::kFloat16 || d == DType::kBFloat16 || d == DType::kFloat32) return Status::kSuccess;
  return fail(Status::kUnsupported, std::string(op) + ": " + name + " is " + dtype_name(d) +
                                        "; supported: fp16, bf16, fp32");
}
}  // namespace

Status check_batched_qkv(const char* op, const TensorView<4>& q, const TensorView<4>& k, const TensorView<4>& v) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "q", q));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "k", k));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "v", v));
  AOTRITON_RETURN_IF_ERROR(check_float_dtype(op, "q", q.dtype));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "k", k.dtype, q.dtype));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "v", v.dtype, q.dtype));
  for (int i : {0, 3}) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "k", k.size(i), i, "q", q.size(i), i));
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "v", v.size(i), i, "k", k.size(i), i));
  return Status::kSuccess;
}

Status check_packed_qkv(const char* op, const TensorView<3>& q, const TensorView<3>& k, const TensorView<3>& v) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "q", q));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "k", k));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "v", v));
  AOTRITON_RETURN_IF_ERROR(check_float_dtype(op, "q", q.dtype));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "k", k.dtype, q.dtype));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "v", v.dtype, q.dtype));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "k", k.size(2), 2, "q", q.size(2), 2));
  for (int i = 0; i < 2; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "v", v.size(i), i, "k", k.size(i), i));
  return Status::kSuccess;
}

template <int R>
static Status check_like_impl(const char* op, const char* name, const TensorView<R>& t, const char* like_name,
                              const TensorView<R>& like) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, like.dtype));
  for (int i = 0; i < R; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, name, t.size(i), i, like_name, like.size(i), i));
  return Status::kSuccess;
}

Status check_like(const char* op, const char* name, const TensorView<4>& t, const char* like_name,
                  const TensorView<4>& like) {
  return check_like_impl(op, name, t, like_name, like);
}
Status check_like(const char* op, const char* name, const TensorView<3>& t, const char* like_name,
                  const TensorView<3>& like) {
  return check_like_impl(op, name, t, like_name, like);
}

Status check_row_stats(const char* op, const char* name, const TensorView<3>& t, int64_t b, int64_t h, int64_t s) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, DType::kFloat32));
  int64_t want[3] = {b, h, s};
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, name, t.size(i), i, "[B, Hq, Sq]", want[i], i));
  return check_i32(op, name, std::max(t.stride(0), t.stride(1)));
}

Status check_row_stats(const char* op, const char* name, const TensorView<2>& t, int64_t h, int64_t total) {
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, name, t.size(0), 0, "[Hq, total_q]", h, 0));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, name, t.size(1), 1, "[Hq, total_q]", total, 1));
  return check_i32(op, name, t.stride(0));
}

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
