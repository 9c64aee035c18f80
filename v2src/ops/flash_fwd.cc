// Flash attention forward: argument checks, functional choice, launch.
#include "attn_dropout_mask.h"
#include "attn_fwd.h"
#include "flash_common.h"
#include "flash_features.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

namespace {

using namespace detail_;
using detail::fail;

struct Fwd {
  const char* op;
  Geometry g;
  Strided q, k, v, o;
  const float* lse;
  int64_t lse_z, lse_h;
  float scale;
  CausalType causal;
  float dropout_p;
  const int64_t *seed, *offset;
  Strided mask;  // z, h, m = (sequence, head, query row) strides of the int8 mask
  Features features;
};

Status check_mask(const char* op, const TensorView<4>& m, const Geometry& g) {
  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(op, "dropout_mask", m));
  if (m.dtype != DType::kInt8 && m.dtype != DType::kUInt8)
    return fail(Status::kInvalidArgument, std::string(op) + ": dropout_mask must be int8 or uint8");
  int64_t want[4] = {g.batch, g.hq, g.max_sq, g.max_sk};
  for (int i = 0; i < 4; ++i)
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "dropout_mask", m.size(i), i, "[B, Hq, Sq, Sk]", want[i], i));
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(detail::check_i32(op, "dropout_mask stride", m.stride(i)));
  // The kernel adds row * stride(2) + column in int32 (tritonsrc/flash/dropout_mask.py).
  return detail::check_i32_offset(op, "dropout_mask offset within a head, (Sq - 1) * stride(2) + Sk", g.max_sq,
                                  m.stride(2), g.max_sk);
}

Status launch(const Fwd& p, Stream stream, const KernelOptions* options) {
  const Geometry& g = p.g;
  bool dropout = p.dropout_p > 0.f || p.mask.ptr;
  AOTRITON_RETURN_IF_ERROR(check_geometry(p.op, g, p.scale, p.dropout_p, dropout, p.seed, p.offset, p.causal));
  for (const StridedRows& c : {StridedRows{"q", &p.q, g.max_sq}, {"k", &p.k, g.max_sk}, {"v", &p.v, g.max_sk},
                               {"out", &p.o, g.max_sq}})
    AOTRITON_RETURN_IF_ERROR(check_strided(p.op, c.name, *c.t, c.rows, g.head_dim));
  KernelFeatures feat;
  AOTRITON_RETURN_IF_ERROR(resolve_features(p.op, p.features, p.causal, g.dtype, dropout, g.batch, g.hq, &feat));
  if (g.batch == 0 || g.hq == 0 || g.max_sq == 0) return Status::kSuccess;
  namespace kn = detail::kernels::attn_fwd;
  const kn::Inputs in{
      .Q = kernel_tensor(p.q), .K = kernel_tensor(p.k), .V = kernel_tensor(p.v), .O = kernel_tensor(p.o),
      .LSE = detail::KernelTensor<2>{p.lse, {p.lse_z, p.lse_h}},
      .cu_seqlens_q = g.cu_q, .cu_seqlens_k = g.cu_k,
      .philox_seed_ptr = p.seed, .philox_offset_ptr = p.offset,
      .sm_scale = p.scale, .dropout_p = p.dropout_p,
      .num_seqs = g.batch, .num_heads_q = g.hq, .num_heads_k = g.hk,
      .max_seqlen_q = g.max_sq, .max_seqlen_k = g.max_sk, .head_dim = g.head_dim,
      .total_q = g.total_q, .total_k = g.total_k,
      .alibi_slopes = alibi_slopes(feat), .softcap = feat.softcap,
      .window_left = feat.window_left, .window_right = feat.window_right, .window_align = feat.window_align,
  };
  kn::Functional f{};
  f.dtype = g.dtype;
  f.BLOCK_DMODEL = head_dim_bucket(g.head_dim);
  f.PADDED_HEAD = f.BLOCK_DMODEL != g.head_dim;
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  f.IS_VARLEN = g.varlen;
  f.ENABLE_DROPOUT = dropout;
  apply_feature_functional(feat, f);
  kn::Args a;
  AOTRITON_RETURN_IF_ERROR(kn::make_args(in, &a));
  if (!p.mask.ptr) return kn::launch(a, f, stream, options);
  // The debug keep mask: a second kernel draws the forward's Philox numbers
  // again (same seed, offset and element counters). Both are resolved before
  // either launches, so a missing image launches nothing.
  namespace km = detail::kernels::attn_dropout_mask;
  km::Args ma;
  AOTRITON_RETURN_IF_ERROR(km::make_args(
      {
          .philox_seed_ptr = p.seed, .philox_offset_ptr = p.offset, .dropout_mask = kernel_tensor(p.mask),
          .cu_seqlens_q = g.cu_q, .cu_seqlens_k = g.cu_k, .dropout_p = p.dropout_p,
          .num_heads_q = g.hq, .max_seqlen_q = g.max_sq, .max_seqlen_k = g.max_sk,
          .total_q = g.total_q, .total_k = g.total_k, .num_seqs = g.batch,
      },
      &ma));
  km::Functional mf{};
  mf.IS_VARLEN = g.varlen;
  return detail::resolve_then_launch([&]() -> Status {
    AOTRITON_RETURN_IF_ERROR(kn::launch(a, f, stream, options));
    return km::launch(ma, mf, stream, nullptr);
  });
}

// Shared by the batched and varlen forward: the optional debug mask, and
// outputs that neither share memory among themselves nor with an input.
template <class Params>
Status set_mask_and_check_outputs(const char* op, const Params& p, Fwd* f) {
  if (p.dropout_mask.data) {
    AOTRITON_RETURN_IF_ERROR(check_mask(op, p.dropout_mask, f->g));
    const TensorView<4>& m = p.dropout_mask;
    f->mask = Strided{m.data, m.stride(0), m.stride(1), m.stride(2)};
  }
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "out", p.out));
  if (p.dropout_mask.data) AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "dropout_mask", p.dropout_mask));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "lse", p.lse));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("out", p.out), detail::span_of("lse", p.lse), detail::span_of("dropout_mask", p.dropout_mask)},
      {detail::span_of("q", p.q), detail::span_of("k", p.k), detail::span_of("v", p.v),
       detail::span_of("alibi_slopes", p.features.alibi_slopes)}));
  return Status::kSuccess;
}

}  // namespace

Status attn_fwd(const FwdParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_fwd";
  AOTRITON_RETURN_IF_ERROR(check_batched_qkv(op, p.q, p.k, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "out", p.out, "q", p.q));
  Fwd f{op};
  f.g = Geometry{false, p.q.dtype, p.q.size(0), p.q.size(2), p.k.size(2), p.q.size(1), p.k.size(1), p.q.size(3)};
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "lse", p.lse, f.g.batch, f.g.hq, f.g.max_sq));
  f.q = bshd(p.q), f.k = bshd(p.k), f.v = bshd(p.v), f.o = bshd(p.out);
  f.lse = static_cast<const float*>(p.lse.data), f.lse_z = p.lse.stride(0), f.lse_h = p.lse.stride(1);
  f.scale = p.softmax_scale, f.causal = p.causal, f.dropout_p = p.dropout_p;
  f.seed = p.philox_seed, f.offset = p.philox_offset;
  f.features = p.features;
  AOTRITON_RETURN_IF_ERROR(set_mask_and_check_outputs(op, p, &f));
  return launch(f, stream, options);
} catch (...) {
  return detail::fail_exception("attn_fwd: unexpected exception");
}

Status attn_fwd_varlen(const FwdVarlenParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_fwd_varlen";
  AOTRITON_RETURN_IF_ERROR(check_packed_qkv(op, p.q, p.k, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "out", p.out, "q", p.q));
  if (p.num_seqs < 0 || p.max_seqlen_q < 0 || p.max_seqlen_k < 0)
    return fail(Status::kInvalidArgument, "attn_fwd_varlen: num_seqs and max seqlens must be >= 0");
  Fwd f{op};
  f.g = Geometry{true, p.q.dtype, p.num_seqs, p.q.size(1), p.k.size(1), p.max_seqlen_q, p.max_seqlen_k, p.q.size(2),
                 p.cu_seqlens_q, p.cu_seqlens_k, p.q.size(0), p.k.size(0)};
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "lse", p.lse, f.g.hq, p.q.size(0)));
  f.q = packed(p.q), f.k = packed(p.k), f.v = packed(p.v), f.o = packed(p.out);
  f.lse = static_cast<const float*>(p.lse.data), f.lse_z = 0, f.lse_h = p.lse.stride(0);
  f.scale = p.softmax_scale, f.causal = p.causal, f.dropout_p = p.dropout_p;
  f.seed = p.philox_seed, f.offset = p.philox_offset;
  f.features = p.features;
  AOTRITON_RETURN_IF_ERROR(set_mask_and_check_outputs(op, p, &f));
  return launch(f, stream, options);
} catch (...) {
  return detail::fail_exception("attn_fwd_varlen: unexpected exception");
}

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
