// Flash attention backward: delta = rowsum(dO * O), then dK/dV, then dQ
// (on sm_90, dK/dV by the Gluon kernel bwd_dkdv_hopper where it serves).
#include "bwd_dkdv.h"
#include "bwd_dkdv_hopper.h"
#include "bwd_dkdv_vdim.h"
#include "bwd_dq.h"
#include "bwd_dq_convert.h"
#include "bwd_dq_vdim.h"
#include "bwd_preprocess.h"
#include "device_arch.h"
#include "flash_common.h"
#include "flash_features.h"
#include "flash_hopper.h"
#include "flash_vdim.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

namespace {

using namespace detail;
using detail::fail;

struct Bwd {
  const char* op;
  Geometry g;
  Strided q, k, v, o, dout, dq, dk, dv;
  const float* lse;
  float* delta;
  int64_t stat_z, stat_h;  // lse and delta share a layout
  int64_t delta_z, delta_h;
  float scale;
  CausalType causal;
  float dropout_p;
  const int64_t *seed, *offset;
  Features features;
  KernelFeatures feat;  // resolved from features in launch()
  int32_t block_dv = 0;  // BLOCK_DV (flash_vdim.h), resolved in launch()
  Strided dq_accum;      // the optional fp32 dQ workspace (null: deterministic)
};

detail::KernelTensor<2> lse_tensor(const Bwd& p) { return {p.lse, {p.stat_z, p.stat_h}}; }
detail::KernelTensor<2> delta_tensor(const Bwd& p) { return {p.delta, {p.delta_z, p.delta_h}}; }

template <typename F>
void fill_functional(F& f, const Bwd& p) {
  f.dtype = p.g.dtype;
  f.BLOCK_DMODEL = head_dim_bucket(p.g.head_dim);
  f.PADDED_HEAD = f.BLOCK_DMODEL != p.g.head_dim;
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  f.IS_VARLEN = p.g.varlen;
  f.ENABLE_DROPOUT = p.dropout_p > 0.f;
  f.BLOCK_DV = p.block_dv;
}

// dK/dV of bwd_dkdv or bwd_dkdv_vdim (the same kernel, the same names).
template <typename In, typename F>
Status launch_dkdv(const Bwd& p, Status (*launch)(const In&, const F&, Stream, const KernelOptions*), Stream stream,
                   const KernelOptions* options) {
  const Geometry& g = p.g;
  const KernelFeatures& ft = p.feat;
  const In in{
      .Q = kernel_tensor(p.q), .K = kernel_tensor(p.k), .V = kernel_tensor(p.v), .DO = kernel_tensor(p.dout),
      .DK = kernel_tensor(p.dk), .DV = kernel_tensor(p.dv), .LSE = lse_tensor(p), .Delta = delta_tensor(p),
      .cu_seqlens_q = g.cu_q, .cu_seqlens_k = g.cu_k, .philox_seed_ptr = p.seed, .philox_offset_ptr = p.offset,
      .sm_scale = p.scale, .dropout_p = p.dropout_p,
      .num_heads_q = g.hq, .num_heads_k = g.hk, .max_seqlen_q = g.max_sq, .max_seqlen_k = g.max_sk,
      .head_dim = g.head_dim, .total_q = g.total_q, .total_k = g.total_k,
      .alibi_slopes = alibi_slopes(ft), .softcap = ft.softcap,
      .window_left = ft.window_left, .window_right = ft.window_right, .window_align = ft.window_align,
      .num_seqs = g.batch,
  };
  F f{};
  fill_functional(f, p);
  apply_feature_functional(ft, f);
  return launch(in, f, stream, options);
}

// dQ of bwd_dq or bwd_dq_vdim.
template <typename In, typename F>
Status launch_dq(const Bwd& p, Status (*launch)(const In&, const F&, Stream, const KernelOptions*), Stream stream,
                 const KernelOptions* options) {
  const Geometry& g = p.g;
  const KernelFeatures& ft = p.feat;
  const In in{
      .Q = kernel_tensor(p.q), .K = kernel_tensor(p.k), .V = kernel_tensor(p.v), .DO = kernel_tensor(p.dout),
      .DQ = kernel_tensor(p.dq), .LSE = lse_tensor(p), .Delta = delta_tensor(p),
      .cu_seqlens_q = g.cu_q, .cu_seqlens_k = g.cu_k, .philox_seed_ptr = p.seed, .philox_offset_ptr = p.offset,
      .sm_scale = p.scale, .dropout_p = p.dropout_p,
      .num_heads_q = g.hq, .num_heads_k = g.hk, .max_seqlen_q = g.max_sq, .max_seqlen_k = g.max_sk,
      .head_dim = g.head_dim, .total_q = g.total_q, .total_k = g.total_k,
      .alibi_slopes = alibi_slopes(ft), .softcap = ft.softcap,
      .window_left = ft.window_left, .window_right = ft.window_right, .window_align = ft.window_align,
      .num_seqs = g.batch,
  };
  F f{};
  fill_functional(f, p);
  apply_feature_functional(ft, f);
  return launch(in, f, stream, options);
}

// delta = rowsum(dO * O) over out's head dim (v's); with `dqa`, also zero that fp32 dQ accumulator.
Status launch_preprocess(const Bwd& p, const Strided* dqa, Stream stream) {
  const Geometry& g = p.g;
  namespace kp = detail::kernels::bwd_preprocess;
  const kp::Inputs pa{
      .O = kernel_tensor(p.o), .DO = kernel_tensor(p.dout), .Delta = delta_tensor(p),
      .DQA = dqa ? kernel_tensor(*dqa) : detail::KernelTensor<3>{nullptr, {0, 0, 0}},
      .cu_seqlens_q = g.cu_q,
      .num_heads_q = g.hq, .max_seqlen_q = g.max_sq, .head_dim = g.head_dim_v, .total_q = g.total_q,
      .num_seqs = g.batch,
  };
  kp::Functional pf{};
  pf.dtype = g.dtype;
  pf.BLOCK_DMODEL = head_dim_bucket(g.head_dim_v);
  pf.PADDED_HEAD = pf.BLOCK_DMODEL != g.head_dim_v;
  pf.IS_VARLEN = g.varlen;
  pf.ZERO_DQ_ACC = dqa != nullptr;
  return kp::launch(pa, pf, stream, nullptr);
}

// ---- The sm_90 dK/dV kernel (tritonsrc/flash/bwd_hopper.py, rules_flash_hopper.py)

namespace kh = detail::kernels::bwd_dkdv_hopper;
namespace kc = detail::kernels::bwd_dq_convert;

struct HopperBwd {
  TmaTensor q, k, v, dout;
  bool fuse_dq = false;  // dQ by atomics into p.dq_accum, then bwd_dq_convert
};

kh::Functional hopper_functional(const Bwd& p, bool fuse_dq) {
  kh::Functional f{};
  f.dtype = p.g.dtype;
  f.BLOCK_DMODEL = static_cast<int32_t>(p.g.head_dim);
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  f.FUSE_DQ = fuse_dq;
  return f;
}

kc::Functional convert_functional(const Bwd& p) {
  kc::Functional f{};
  f.dtype = p.g.dtype;
  f.BLOCK_DMODEL = static_cast<int32_t>(p.g.head_dim);
  f.PADDED_HEAD = false;
  f.IS_VARLEN = false;
  return f;
}

// The calls the sm_90 kernel computes: batched fp16/bf16, head dim 64 or 128
// (one for q/k and v), no dropout or attention feature, non-empty sequences,
// every input a TMA operand.
bool hopper_serves(const Bwd& p, HopperBwd* c) {
  const Geometry& g = p.g;
  if (g.varlen || p.dropout_p > 0.f || p.feat.local_window || p.feat.score_mod || p.block_dv ||
      g.head_dim_v != g.head_dim || (g.head_dim != 64 && g.head_dim != 128) || g.max_sq == 0 || g.max_sk == 0 ||
      (g.dtype != DType::kFloat16 && g.dtype != DType::kBFloat16))
    return false;
  c->q = tma_bshd(p.q, g.batch, g.max_sq, g.hq, g.head_dim);
  c->k = tma_bshd(p.k, g.batch, g.max_sk, g.hk, g.head_dim);
  c->v = tma_bshd(p.v, g.batch, g.max_sk, g.hk, g.head_dim);
  c->dout = tma_bshd(p.dout, g.batch, g.max_sq, g.hq, g.head_dim);
  for (const TmaTensor* t : {&c->q, &c->k, &c->v, &c->dout})
    if (!tma_compatible(*t, g.dtype, 5)) return false;
  return true;
}

// Whether this call runs the sm_90 kernel: forced by one of its config names,
// or (no config forced) it serves the call, the GPU is sm_90 and this build
// compiled it. dQ by atomics when the caller gave the workspace and the
// build has that functional and the conversion.
Status pick_hopper(const Bwd& p, Stream stream, const KernelOptions* options, HopperBwd* c, bool* use) {
  *use = false;
  const bool forced = options && options->force_config;
  const bool forced_here = forced && kh::has_config(options->force_config);
  const bool serves = hopper_serves(p, c);
  if (forced_here && !serves)
    return fail(Status::kInvalidArgument,
                std::string(p.op) + ": force_config names a bwd_dkdv_hopper config, but that kernel serves batched "
                                    "fp16/bf16 calls with head dim 64 or 128 (q/k and v alike), 16-byte aligned "
                                    "strides, no dropout, window, softcap or ALiBi");
  if (!serves || (forced && !forced_here) || (!forced_here && !hopper_enabled(true))) return Status::kSuccess;
  int arch = 0;
  AOTRITON_RETURN_IF_ERROR(device_arch(stream, &arch));
  if (arch != 90 && !forced_here) return Status::kSuccess;
  c->fuse_dq = p.dq_accum.ptr && kh::built_for(hopper_functional(p, true), 90) &&
               kc::built_for(convert_functional(p), 90);
  *use = forced_here || kh::built_for(hopper_functional(p, c->fuse_dq), 90);
  return Status::kSuccess;
}

Status launch_hopper_dkdv(const Bwd& p, const HopperBwd& c, Stream stream, const KernelOptions* options) {
  const Geometry& g = p.g;
  const Strided none{};
  const kh::Inputs in{
      .q_desc = c.q, .k_desc = c.k, .v_desc = c.v, .do_desc = c.dout,
      .DK = kernel_tensor(p.dk), .DV = kernel_tensor(p.dv), .DQA = kernel_tensor(c.fuse_dq ? p.dq_accum : none),
      .LSE = lse_tensor(p), .Delta = delta_tensor(p), .sm_scale = p.scale,
      .num_heads_q = g.hq, .num_heads_k = g.hk, .seqlen_q = g.max_sq, .seqlen_k = g.max_sk,
      .num_seqs = g.batch,
  };
  return kh::launch(in, hopper_functional(p, c.fuse_dq), stream, options);
}

Status launch_dq_convert(const Bwd& p, Stream stream) {
  const Geometry& g = p.g;
  const kc::Inputs in{
      .DQA = kernel_tensor(p.dq_accum), .DQ = kernel_tensor(p.dq), .cu_seqlens_q = nullptr, .sm_scale = p.scale,
      .num_heads_q = g.hq, .max_seqlen_q = g.max_sq, .head_dim = g.head_dim, .total_q = g.total_q,
      .num_seqs = g.batch,
  };
  return kc::launch(in, convert_functional(p), stream, nullptr);
}

// The three launches (validated arguments).
Status launch_kernels(const Bwd& p, Stream stream, const KernelOptions* options) {
  HopperBwd hopper;
  bool use_hopper;
  AOTRITON_RETURN_IF_ERROR(pick_hopper(p, stream, options, &hopper, &use_hopper));
  if (use_hopper) {
    // options (a forced config is one of this kernel's; ran_config) go to the dK/dV kernel only.
    AOTRITON_RETURN_IF_ERROR(launch_preprocess(p, hopper.fuse_dq ? &p.dq_accum : nullptr, stream));
    AOTRITON_RETURN_IF_ERROR(launch_hopper_dkdv(p, hopper, stream, options));
    if (hopper.fuse_dq) return launch_dq_convert(p, stream);
    namespace kq = detail::kernels::bwd_dq;
    return launch_dq<kq::Inputs, kq::Functional>(p, &kq::launch, stream, nullptr);
  }
  AOTRITON_RETURN_IF_ERROR(launch_preprocess(p, nullptr, stream));

  // v with its own head dim runs the _vdim kernels (same arguments).
  namespace kkv = detail::kernels::bwd_dkdv;
  namespace kkvv = detail::kernels::bwd_dkdv_vdim;
  // (launch is overloaded on Args and Inputs: the template arguments pick the Inputs one.)
  const Status dkdv = p.block_dv ? launch_dkdv<kkvv::Inputs, kkvv::Functional>(p, &kkvv::launch, stream, options)
                                 : launch_dkdv<kkv::Inputs, kkv::Functional>(p, &kkv::launch, stream, options);
  AOTRITON_RETURN_IF_ERROR(dkdv);
  namespace kq = detail::kernels::bwd_dq;
  namespace kqv = detail::kernels::bwd_dq_vdim;
  return p.block_dv ? launch_dq<kqv::Inputs, kqv::Functional>(p, &kqv::launch, stream, options)
                    : launch_dq<kq::Inputs, kq::Functional>(p, &kq::launch, stream, options);
}

Status launch(Bwd& p, Stream stream, const KernelOptions* options) {
  const Geometry& g = p.g;
  AOTRITON_RETURN_IF_ERROR(
      check_geometry(p.op, g, p.scale, p.dropout_p, p.dropout_p > 0.f, p.seed, p.offset, p.causal));
  AOTRITON_RETURN_IF_ERROR(
      resolve_features(p.op, p.features, p.causal, g.dtype, p.dropout_p > 0.f, g.batch, g.hq, &p.feat));
  if (p.feat.local_window) AOTRITON_RETURN_IF_ERROR(check_band(p.op, g));
  AOTRITON_RETURN_IF_ERROR(check_dkdv_steps(p.op, g));
  AOTRITON_RETURN_IF_ERROR(resolve_head_dim_v(p.op, g.head_dim, g.head_dim_v, g.dtype, p.dropout_p > 0.f,
                                              p.feat.local_window, &p.block_dv));
  for (const StridedRows& c :
       {StridedRows{"q", &p.q, g.max_sq}, {"k", &p.k, g.max_sk}, {"dq", &p.dq, g.max_sq}, {"dk", &p.dk, g.max_sk}})
    AOTRITON_RETURN_IF_ERROR(check_strided(p.op, c.name, *c.t, c.rows, g.head_dim));
  for (const StridedRows& c : {StridedRows{"v", &p.v, g.max_sk}, {"out", &p.o, g.max_sq}, {"dout", &p.dout, g.max_sq},
                               {"dv", &p.dv, g.max_sk}})
    AOTRITON_RETURN_IF_ERROR(check_strided(p.op, c.name, *c.t, c.rows, g.head_dim_v));
  if (g.batch == 0 || g.hq == 0 || (g.max_sq == 0 && g.max_sk == 0)) return Status::kSuccess;
  // All three kernels are resolved before the first launch (resolve_first.h).
  return detail::resolve_then_launch([&] { return launch_kernels(p, stream, options); });
}

}  // namespace

namespace {

// The optional fp32 dQ workspace of attn_bwd (flash.h): q's shape, 16-byte
// aligned rows and strides (the generated launcher checks the same hints).
Status check_dq_accum(const char* op, const TensorView<4>& a, const TensorView<4>& q) {
  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(op, "dq_accum", a));
  if (a.dtype != DType::kFloat32) return fail(Status::kInvalidArgument, std::string(op) + ": dq_accum must be float32");
  for (int i = 0; i < 4; ++i)
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(op, "dq_accum", a.size(i), i, "q", q.size(i), i));
  bool aligned = reinterpret_cast<uintptr_t>(a.data) % 16 == 0;
  for (int i = 0; i < 3; ++i) aligned = aligned && a.stride(i) % 16 == 0;
  if (!aligned)
    return fail(Status::kInvalidArgument, std::string(op) + ": dq_accum needs a 16-byte aligned base and strides "
                                                             "that are multiples of 16 elements (a contiguous tensor)");
  // bwd_preprocess (zeroing it) and bwd_dq_convert add row * stride(1) + column
  // in int32, as for q: its own strides may differ from q's.
  AOTRITON_RETURN_IF_ERROR(check_strided(op, "dq_accum", bshd(a), q.size(1), q.size(3)));
  return detail::check_no_self_overlap(op, "dq_accum", a);
}

// The gradients and delta (and dq_accum) are written while every input is
// read: none may share memory with another or with an input (batched and
// varlen alike).
template <class Params>
Status check_outputs_apart(const char* op, const Params& p, const TensorView<4>& dq_accum = {}) {
  for (auto [name, t] : {std::pair{"dq", &p.dq}, {"dk", &p.dk}, {"dv", &p.dv}})
    AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, name, *t));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "delta", p.delta));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op,
      {detail::span_of("dq", p.dq), detail::span_of("dk", p.dk), detail::span_of("dv", p.dv),
       detail::span_of("delta", p.delta), detail::span_of("dq_accum", dq_accum)},
      {detail::span_of("q", p.q), detail::span_of("k", p.k), detail::span_of("v", p.v), detail::span_of("out", p.out),
       detail::span_of("dout", p.dout), detail::span_of("lse", p.lse),
       detail::span_of("alibi_slopes", p.features.alibi_slopes)}));
  return Status::kSuccess;
}

}  // namespace

Status attn_bwd(const BwdParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_bwd";
  AOTRITON_RETURN_IF_ERROR(check_batched_qkv(op, p.q, p.k, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "out", p.out, p.q, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "dout", p.dout, p.q, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dq", p.dq, "q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dk", p.dk, "k", p.k));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dv", p.dv, "v", p.v));
  Bwd b{op};
  b.g = Geometry{false, p.q.dtype, p.q.size(0), p.q.size(2), p.k.size(2), p.q.size(1), p.k.size(1), p.q.size(3)};
  b.g.head_dim_v = p.v.size(3);
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "lse", p.lse, b.g.batch, b.g.hq, b.g.max_sq));
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "delta", p.delta, b.g.batch, b.g.hq, b.g.max_sq));
  b.q = bshd(p.q), b.k = bshd(p.k), b.v = bshd(p.v), b.o = bshd(p.out), b.dout = bshd(p.dout);
  b.dq = bshd(p.dq), b.dk = bshd(p.dk), b.dv = bshd(p.dv);
  b.lse = static_cast<const float*>(p.lse.data), b.stat_z = p.lse.stride(0), b.stat_h = p.lse.stride(1);
  b.delta = static_cast<float*>(p.delta.data), b.delta_z = p.delta.stride(0), b.delta_h = p.delta.stride(1);
  b.scale = p.softmax_scale, b.causal = p.causal, b.dropout_p = p.dropout_p;
  b.seed = p.philox_seed, b.offset = p.philox_offset;
  b.features = p.features;
  if (p.dq_accum.data) {
    AOTRITON_RETURN_IF_ERROR(check_dq_accum(op, p.dq_accum, p.q));
    b.dq_accum = bshd(p.dq_accum);
  }
  AOTRITON_RETURN_IF_ERROR(check_outputs_apart(op, p, p.dq_accum));
  return launch(b, stream, options);
} catch (...) {
  return detail::fail_exception("attn_bwd: unexpected exception");
}

Status attn_bwd_varlen(const BwdVarlenParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "attn_bwd_varlen";
  AOTRITON_RETURN_IF_ERROR(check_packed_qkv(op, p.q, p.k, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "out", p.out, p.q, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "dout", p.dout, p.q, p.v));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dq", p.dq, "q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dk", p.dk, "k", p.k));
  AOTRITON_RETURN_IF_ERROR(check_like(op, "dv", p.dv, "v", p.v));
  if (p.num_seqs < 0 || p.max_seqlen_q < 0 || p.max_seqlen_k < 0)
    return fail(Status::kInvalidArgument, "attn_bwd_varlen: num_seqs and max seqlens must be >= 0");
  Bwd b{op};
  b.g = Geometry{true, p.q.dtype, p.num_seqs, p.q.size(1), p.k.size(1), p.max_seqlen_q, p.max_seqlen_k, p.q.size(2),
                 p.cu_seqlens_q, p.cu_seqlens_k, p.q.size(0), p.k.size(0)};
  b.g.head_dim_v = p.v.size(2);
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "lse", p.lse, b.g.hq, p.q.size(0)));
  AOTRITON_RETURN_IF_ERROR(check_row_stats(op, "delta", p.delta, b.g.hq, p.q.size(0)));
  b.q = packed(p.q), b.k = packed(p.k), b.v = packed(p.v), b.o = packed(p.out), b.dout = packed(p.dout);
  b.dq = packed(p.dq), b.dk = packed(p.dk), b.dv = packed(p.dv);
  b.lse = static_cast<const float*>(p.lse.data), b.stat_z = 0, b.stat_h = p.lse.stride(0);
  b.delta = static_cast<float*>(p.delta.data), b.delta_z = 0, b.delta_h = p.delta.stride(0);
  b.scale = p.softmax_scale, b.causal = p.causal, b.dropout_p = p.dropout_p;
  b.seed = p.philox_seed, b.offset = p.philox_offset;
  b.features = p.features;
  AOTRITON_RETURN_IF_ERROR(check_outputs_apart(op, p));
  return launch(b, stream, options);
} catch (...) {
  return detail::fail_exception("attn_bwd_varlen: unexpected exception");
}

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
