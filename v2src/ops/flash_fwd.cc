// Flash attention forward: argument checks, functional choice, launch.
#include <algorithm>
#include <cmath>
#include <limits>

#include "aotriton/flash.h"
#include "attn_fwd.h"
#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

namespace {

using detail::fail;

// What the batched and varlen entry points share, in kernel terms.
struct FwdProblem {
  const char* op;
  bool varlen;
  DType dtype;
  const void *q, *k, *v, *o;
  const float* lse;
  int64_t sq[3], sk[3], sv[3], so[3];  // (sequence, head, token) strides
  int64_t lse_z, lse_h;
  int64_t batch, hq, hk, max_sq, max_sk, head_dim;
  const int32_t *cu_q, *cu_k;
  float scale;
  CausalType causal;
  float dropout_p;
  const int64_t *seed, *offset;
  const void* mask;
  int64_t mask_z, mask_h, mask_m;
};

int32_t head_dim_bucket(int64_t d) {
  int32_t b = 16;
  while (b < d) b *= 2;
  return b;
}

Status check_fits(const char* op, const char* what, int64_t v) { return detail::check_i32(op, what, v); }

Status check_common(const FwdProblem& p) {
  const char* op = p.op;
  if (p.head_dim < 1 || p.head_dim > 256)
    return fail(Status::kUnsupported, std::string(op) + ": head_dim " + std::to_string(p.head_dim) +
                                          " is outside the supported range 1..256");
  if (p.hk < 1 || p.hq % p.hk != 0)
    return fail(Status::kInvalidArgument, std::string(op) + ": num_heads_q (" + std::to_string(p.hq) +
                                              ") must be a positive multiple of num_heads_k (" +
                                              std::to_string(p.hk) + ")");
  if (!(p.scale > 0.f) || !std::isfinite(p.scale))
    return fail(Status::kInvalidArgument, std::string(op) + ": softmax_scale must be a positive finite number");
  if (!(p.dropout_p >= 0.f && p.dropout_p < 1.f))
    return fail(Status::kInvalidArgument, std::string(op) + ": dropout_p must be in [0, 1)");
  bool dropout = p.dropout_p > 0.f || p.mask;
  if (dropout && (!p.seed || !p.offset))
    return fail(Status::kInvalidArgument, std::string(op) + ": dropout needs philox_seed and philox_offset device pointers");
  if (p.causal != CausalType::kNone && p.causal != CausalType::kTopLeft && p.causal != CausalType::kBottomRight)
    return fail(Status::kInvalidArgument, std::string(op) + ": unknown causal type");
  // The kernel indexes with 32-bit strides and 32-bit in-sequence offsets.
  for (const int64_t* s : {p.sq, p.sk, p.sv, p.so})
    for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(check_fits(op, "a q/k/v/out stride", s[i]));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "q rows * stride", p.max_sq * p.sq[2] + p.head_dim));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "out rows * stride", p.max_sq * p.so[2] + p.head_dim));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "k rows * stride", p.max_sk * p.sk[2] + p.head_dim));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "v rows * stride", p.max_sk * p.sv[2] + p.head_dim));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "lse strides", std::max(p.lse_z, p.lse_h)));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "dropout_mask strides", std::max({p.mask_z, p.mask_h, p.mask_m})));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "batch", p.batch));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "max_seqlen_q", p.max_sq));
  AOTRITON_RETURN_IF_ERROR(check_fits(op, "max_seqlen_k", p.max_sk));
  return Status::kSuccess;
}

Status launch(const FwdProblem& p, Stream stream, const KernelOptions* options) {
  AOTRITON_RETURN_IF_ERROR(check_common(p));
  if (p.batch == 0 || p.hq == 0 || p.max_sq == 0) return Status::kSuccess;
  namespace kn = detail::kernels::attn_fwd;
  kn::Args a{};
  a.Q = p.q;
  a.K = p.k;
  a.V = p.v;
  a.O = p.o;
  a.LSE = p.lse;
  a.cu_seqlens_q = p.cu_q;
  a.cu_seqlens_k = p.cu_k;
  a.philox_seed_ptr = p.seed;
  a.philox_offset_ptr = p.offset;
  a.dropout_mask = p.mask;
  a.sm_scale = p.scale;
  a.dropout_p = p.dropout_p;
  a.stride_qz = static_cast<int32_t>(p.sq[0]);
  a.stride_qh = static_cast<int32_t>(p.sq[1]);
  a.stride_qm = static_cast<int32_t>(p.sq[2]);
  a.stride_kz = static_cast<int32_t>(p.sk[0]);
  a.stride_kh = static_cast<int32_t>(p.sk[1]);
  a.stride_kn = static_cast<int32_t>(p.sk[2]);
  a.stride_vz = static_cast<int32_t>(p.sv[0]);
  a.stride_vh = static_cast<int32_t>(p.sv[1]);
  a.stride_vn = static_cast<int32_t>(p.sv[2]);
  a.stride_oz = static_cast<int32_t>(p.so[0]);
  a.stride_oh = static_cast<int32_t>(p.so[1]);
  a.stride_om = static_cast<int32_t>(p.so[2]);
  a.stride_lse_z = static_cast<int32_t>(p.lse_z);
  a.stride_lse_h = static_cast<int32_t>(p.lse_h);
  a.stride_mz = static_cast<int32_t>(p.mask_z);
  a.stride_mh = static_cast<int32_t>(p.mask_h);
  a.stride_mm = static_cast<int32_t>(p.mask_m);
  a.num_seqs = static_cast<int32_t>(p.batch);
  a.num_heads_q = static_cast<int32_t>(p.hq);
  a.num_heads_k = static_cast<int32_t>(p.hk);
  a.max_seqlen_q = static_cast<int32_t>(p.max_sq);
  a.max_seqlen_k = static_cast<int32_t>(p.max_sk);
  a.head_dim = static_cast<int32_t>(p.head_dim);
  kn::Functional f{};
  f.dtype = p.dtype;
  f.BLOCK_DMODEL = head_dim_bucket(p.head_dim);
  f.PADDED_HEAD = f.BLOCK_DMODEL != p.head_dim;
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  f.IS_VARLEN = p.varlen;
  f.ENABLE_DROPOUT = p.dropout_p > 0.f || p.mask;
  f.RETURN_DROPOUT_MASK = p.mask != nullptr;
  return kn::launch(a, f, stream, options);
}

template <int R>
Status check_same_dtype(const char* op, const char* name, const TensorView<R>& t, DType want) {
  return detail::check_dtype(op, name, t.dtype, want);
}

}  // namespace

Status attn_fwd(const FwdParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_fwd";
  using detail::check_same_dim;
  using detail::check_tensor;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "k", p.k));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "v", p.v));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "lse", p.lse));
  for (auto [name, t] : {std::pair{"k", &p.k}, {"v", &p.v}, {"out", &p.out}})
    AOTRITON_RETURN_IF_ERROR(check_same_dtype(op, name, *t, p.q.dtype));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(op, "lse", p.lse.dtype, DType::kFloat32));
  for (int i : {0, 3}) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "k", p.k.size(i), i, "q", p.q.size(i), i));
  for (int i = 0; i < 4; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "v", p.v.size(i), i, "k", p.k.size(i), i));
  for (int i = 0; i < 4; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "out", p.out.size(i), i, "q", p.q.size(i), i));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "lse", p.lse.size(0), 0, "q", p.q.size(0), 0));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "lse", p.lse.size(1), 1, "q", p.q.size(2), 2));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "lse", p.lse.size(2), 2, "q", p.q.size(1), 1));
  FwdProblem pr{};
  pr.op = op;
  pr.varlen = false;
  pr.dtype = p.q.dtype;
  pr.q = p.q.data;
  pr.k = p.k.data;
  pr.v = p.v.data;
  pr.o = p.out.data;
  pr.lse = static_cast<const float*>(p.lse.data);
  // TensorView dims are (batch, seq, head, dim); the kernel wants (batch, head, seq).
  auto strides = [](const TensorView<4>& t, int64_t* s) {
    s[0] = t.stride(0);
    s[1] = t.stride(2);
    s[2] = t.stride(1);
  };
  strides(p.q, pr.sq);
  strides(p.k, pr.sk);
  strides(p.v, pr.sv);
  strides(p.out, pr.so);
  pr.lse_z = p.lse.stride(0);
  pr.lse_h = p.lse.stride(1);
  pr.batch = p.q.size(0);
  pr.hq = p.q.size(2);
  pr.hk = p.k.size(2);
  pr.max_sq = p.q.size(1);
  pr.max_sk = p.k.size(1);
  pr.head_dim = p.q.size(3);
  pr.scale = p.softmax_scale;
  pr.causal = p.causal;
  pr.dropout_p = p.dropout_p;
  pr.seed = p.philox_seed;
  pr.offset = p.philox_offset;
  if (p.dropout_mask.data) {
    const TensorView<4>& m = p.dropout_mask;
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, "dropout_mask", m));
    if (m.dtype != DType::kInt8 && m.dtype != DType::kUInt8)
      return fail(Status::kInvalidArgument, "attn_fwd: dropout_mask must be int8 or uint8");
    int64_t want[4] = {pr.batch, pr.hq, pr.max_sq, pr.max_sk};
    for (int i = 0; i < 4; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "dropout_mask", m.size(i), i, "[B,Hq,Sq,Sk]", want[i], i));
    pr.mask = m.data;
    pr.mask_z = m.stride(0);
    pr.mask_h = m.stride(1);
    pr.mask_m = m.stride(2);
  }
  return launch(pr, stream, options);
} catch (...) {
  return fail(Status::kInternal, "attn_fwd: unexpected exception");
}

Status attn_fwd_varlen(const FwdVarlenParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_fwd_varlen";
  using detail::check_same_dim;
  using detail::check_tensor;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "k", p.k));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "v", p.v));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "lse", p.lse));
  for (auto [name, t] : {std::pair{"k", &p.k}, {"v", &p.v}, {"out", &p.out}})
    AOTRITON_RETURN_IF_ERROR(check_same_dtype(op, name, *t, p.q.dtype));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(op, "lse", p.lse.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "k", p.k.size(2), 2, "q", p.q.size(2), 2));
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "v", p.v.size(i), i, "k", p.k.size(i), i));
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "out", p.out.size(i), i, "q", p.q.size(i), i));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "lse", p.lse.size(0), 0, "q", p.q.size(1), 1));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "lse", p.lse.size(1), 1, "q", p.q.size(0), 0));
  if (!p.cu_seqlens_q || !p.cu_seqlens_k)
    return fail(Status::kInvalidArgument, "attn_fwd_varlen: cu_seqlens_q and cu_seqlens_k are required");
  if (p.num_seqs < 0 || p.max_seqlen_q < 0 || p.max_seqlen_k < 0)
    return fail(Status::kInvalidArgument, "attn_fwd_varlen: num_seqs and max seqlens must be >= 0");
  FwdProblem pr{};
  pr.op = op;
  pr.varlen = true;
  pr.dtype = p.q.dtype;
  pr.q = p.q.data;
  pr.k = p.k.data;
  pr.v = p.v.data;
  pr.o = p.out.data;
  pr.lse = static_cast<const float*>(p.lse.data);
  auto strides = [](const TensorView<3>& t, int64_t* s) {
    s[0] = 0;  // the sequence start comes from cu_seqlens
    s[1] = t.stride(1);
    s[2] = t.stride(0);
  };
  strides(p.q, pr.sq);
  strides(p.k, pr.sk);
  strides(p.v, pr.sv);
  strides(p.out, pr.so);
  pr.lse_z = 0;
  pr.lse_h = p.lse.stride(0);
  pr.batch = p.num_seqs;
  pr.hq = p.q.size(1);
  pr.hk = p.k.size(1);
  pr.max_sq = p.max_seqlen_q;
  pr.max_sk = p.max_seqlen_k;
  pr.head_dim = p.q.size(2);
  pr.cu_q = p.cu_seqlens_q;
  pr.cu_k = p.cu_seqlens_k;
  pr.scale = p.softmax_scale;
  pr.causal = p.causal;
  pr.dropout_p = p.dropout_p;
  pr.seed = p.philox_seed;
  pr.offset = p.philox_offset;
  if (p.dropout_mask.data) {
    const TensorView<4>& m = p.dropout_mask;
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, "dropout_mask", m));
    if (m.dtype != DType::kInt8 && m.dtype != DType::kUInt8)
      return fail(Status::kInvalidArgument, "attn_fwd_varlen: dropout_mask must be int8 or uint8");
    int64_t want[4] = {pr.batch, pr.hq, pr.max_sq, pr.max_sk};
    for (int i = 0; i < 4; ++i)
      AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "dropout_mask", m.size(i), i, "[num_seqs,Hq,max_sq,max_sk]", want[i], i));
    pr.mask = m.data;
    pr.mask_z = m.stride(0);
    pr.mask_h = m.stride(1);
    pr.mask_m = m.stride(2);
  }
  return launch(pr, stream, options);
} catch (...) {
  return fail(Status::kInternal, "attn_fwd_varlen: unexpected exception");
}

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
