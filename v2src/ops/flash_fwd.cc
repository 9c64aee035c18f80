// Flash attention forward: argument checks, functional choice, launch.

#include <limits>

#include "attn_dropout_mask.h"
#include "attn_fwd.h"
#include "attn_fwd_hopper.h"
#include "attn_fwd_hopper_varlen.h"
#include "attn_fwd_vdim.h"
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
using detail::device_info;
using detail::fail;
using detail::tma_compatible;
using detail::TmaTensor;

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

// ---- The sm_90 kernel (tritonsrc/flash/fwd_hopper.py, rules_flash_hopper.py)

struct HopperCall {
  TmaTensor q, k, v, o;  // o: only checked (O is written by plain stores)
  int sms = 0;           // the device's SM count: the persistent schedule's grid
};

// The calls the Hopper kernel computes exactly as attn_fwd: batched, fp16/
// bf16, head dim 64, 96, 128, 192 or 256 (built_for: which of them this
// build has), no dropout, mask or attention feature, every
// tensor a TMA operand (which of those it is built for, and so faster, is
// the rule's choice: built_for).
bool hopper_serves(const Fwd& p, const KernelFeatures& feat, bool dropout, HopperCall* c) {
  const Geometry& g = p.g;
  if (dropout || p.mask.ptr || feat.local_window || feat.score_mod || g.head_dim_v != g.head_dim) return false;
  if ((g.dtype != DType::kFloat16 && g.dtype != DType::kBFloat16) || g.head_dim % 32 != 0 || g.head_dim > 256)
    return false;
  if (g.varlen) {
    // attn_fwd_hopper_varlen: head dim 64 or 128 (the kernel's; the rule builds 64 only, and
    // hopper_built says which are in this build); one batch of total rows in the 5-D view. Its
    // 32-bit row coordinates reach total + 127 (a query block past a sequence's end).
    constexpr int64_t kRowLimit = std::numeric_limits<int32_t>::max() - 128;
    if ((g.head_dim != 64 && g.head_dim != 128) || g.total_q > kRowLimit || g.total_k > kRowLimit) return false;
    auto one_batch = [](const Strided& t, int64_t rows) { return Strided{t.ptr, rows * t.m, t.h, t.m}; };
    c->q = tma_bshd(one_batch(p.q, g.total_q), 1, g.total_q, g.hq, g.head_dim);
    c->k = tma_bshd(one_batch(p.k, g.total_k), 1, g.total_k, g.hk, g.head_dim);
    c->v = tma_bshd(one_batch(p.v, g.total_k), 1, g.total_k, g.hk, g.head_dim);
    c->o = tma_bshd(one_batch(p.o, g.total_q), 1, g.total_q, g.hq, g.head_dim);
    for (const TmaTensor* t : {&c->q, &c->k, &c->v, &c->o})
      if (!tma_compatible(*t, g.dtype, 5)) return false;
    return true;
  }
  // The persistent schedule counts its cdiv(Sq, 128) * B * Hq tiles in int32
  // (fwd_hopper_persistent.py `total`); attn_fwd takes larger calls.
  int64_t tiles = 0;
  if (__builtin_mul_overflow((g.max_sq + 127) / 128, g.batch, &tiles) ||
      __builtin_mul_overflow(tiles, g.hq, &tiles) || tiles > std::numeric_limits<int32_t>::max())
    return false;
  c->q = tma_bshd(p.q, g.batch, g.max_sq, g.hq, g.head_dim);
  c->k = tma_bshd(p.k, g.batch, g.max_sk, g.hk, g.head_dim);
  c->v = tma_bshd(p.v, g.batch, g.max_sk, g.hk, g.head_dim);
  c->o = tma_bshd(p.o, g.batch, g.max_sq, g.hq, g.head_dim);
  for (const TmaTensor* t : {&c->q, &c->k, &c->v, &c->o})
    if (!tma_compatible(*t, g.dtype, 5)) return false;
  return true;
}

namespace kh = detail::kernels::attn_fwd_hopper;
namespace khv = detail::kernels::attn_fwd_hopper_varlen;

// A forced config picks its kernel by name: one attn_fwd_hopper (attn_fwd_hopper_varlen for a
// varlen call) was compiled with.
bool forces_hopper(const Fwd& p, const KernelOptions* options) {
  if (!options) return false;
  return p.g.varlen ? khv::has_config(options->force_config) : kh::has_config(options->force_config);
}

// The Functional of either sm_90 forward (the same three fields).
template <class F>
F hopper_functional(const Fwd& p) {
  F f{};
  f.dtype = p.g.dtype;
  f.BLOCK_DMODEL = static_cast<int32_t>(p.g.head_dim);
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  return f;
}

bool hopper_built(const Fwd& p) {
  return p.g.varlen ? khv::built_for(hopper_functional<khv::Functional>(p), 90)
                    : kh::built_for(hopper_functional<kh::Functional>(p), 90);
}

Status launch_hopper(const Fwd& p, const HopperCall& c, Stream stream, const KernelOptions* options) {
  const Geometry& g = p.g;
  if (g.varlen) {
    const khv::Inputs in{
        .q_desc = c.q, .k_desc = c.k, .v_desc = c.v,
        .O = kernel_tensor(p.o), .LSE = detail::KernelTensor<2>{p.lse, {p.lse_z, p.lse_h}}, .sm_scale = p.scale,
        .cu_seqlens_q = g.cu_q, .cu_seqlens_k = g.cu_k,
        .num_heads_q = g.hq, .num_heads_k = g.hk, .max_seqlen_q = g.max_sq, .max_seqlen_k = g.max_sk,
        .total_q = g.total_q, .total_k = g.total_k, .num_seqs = g.batch,
    };
    return khv::launch(in, hopper_functional<khv::Functional>(p), stream, options);
  }
  const kh::Inputs in{
      .q_desc = c.q, .k_desc = c.k, .v_desc = c.v,
      .O = kernel_tensor(p.o), .LSE = detail::KernelTensor<2>{p.lse, {p.lse_z, p.lse_h}}, .sm_scale = p.scale,
      .num_heads_q = g.hq, .num_heads_k = g.hk, .seqlen_q = g.max_sq, .seqlen_k = g.max_sk,
      .num_seqs = g.batch, .num_sms = c.sms,
  };
  return kh::launch(in, hopper_functional<kh::Functional>(p), stream, options);
}

// Whether this call runs the Hopper kernel: forced by a config name, or the
// GPU is sm_90, the kernel serves the call and this build compiled it for sm_90.
Status pick_hopper(const Fwd& p, const KernelFeatures& feat, bool dropout, Stream stream,
                   const KernelOptions* options, HopperCall* c, bool* use) {
  *use = false;
  const bool serves = hopper_serves(p, feat, dropout, c);
  int arch = 0;  // one cached lookup gives the arch and the SM count launch_hopper needs
  if (p.g.varlen && options && kh::has_config(options->force_config) && !khv::has_config(options->force_config))
    return fail(Status::kInvalidArgument, std::string(p.op) + ": force_config " + options->force_config +
                                              " is an attn_fwd_hopper config; varlen calls run "
                                              "attn_fwd_hopper_varlen, whose configs are the serial schedule's");
  if (forces_hopper(p, options)) {
    if (!serves)
      return fail(Status::kInvalidArgument,
                  std::string(p.op) + (p.g.varlen ? ": force_config names an attn_fwd_hopper_varlen config, but that "
                                                    "kernel serves fp16/bf16 calls with head dim 64 or 128, 16-byte "
                                                    "aligned strides, no dropout, window, softcap or ALiBi, and "
                                                    "fewer than 2^31 - 128 rows"
                                                  : ": force_config names an attn_fwd_hopper config, but that kernel "
                                                    "serves batched fp16/bf16 calls with head dim 64, 96, 128, 192 or "
                                                    "256, 16-byte aligned strides, no dropout, window, softcap or "
                                                    "ALiBi, and at most 2^31 - 1 (128-row query block, batch x head) "
                                                    "tiles"));
    *use = true;
    return device_info(stream, &arch, &c->sms);
  }
  if (!serves || (options && options->force_config) || !hopper_enabled(false)) return Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(device_info(stream, &arch, &c->sms));
  *use = arch == 90 && hopper_built(p);
  return Status::kSuccess;
}

// Inputs and Functional of attn_fwd and attn_fwd_vdim (the same kernel, the same names).
template <typename In>
In fwd_inputs(const Fwd& p, const KernelFeatures& feat) {
  const Geometry& g = p.g;
  return In{
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
}

template <typename F>
F fwd_functional(const Fwd& p, const KernelFeatures& feat, bool dropout) {
  const Geometry& g = p.g;
  F f{};
  f.dtype = g.dtype;
  f.BLOCK_DMODEL = head_dim_bucket(g.head_dim);
  f.PADDED_HEAD = f.BLOCK_DMODEL != g.head_dim;
  f.CAUSAL_TYPE = static_cast<int32_t>(p.causal);
  f.IS_VARLEN = g.varlen;
  f.ENABLE_DROPOUT = dropout;
  apply_feature_functional(feat, f);
  return f;
}

Status launch(const Fwd& p, Stream stream, const KernelOptions* options) {
  const Geometry& g = p.g;
  bool dropout = p.dropout_p > 0.f || p.mask.ptr;
  AOTRITON_RETURN_IF_ERROR(check_geometry(p.op, g, p.scale, p.dropout_p, dropout, p.seed, p.offset, p.causal));
  for (const StridedRows& c : {StridedRows{"q", &p.q, g.max_sq}, {"k", &p.k, g.max_sk}})
    AOTRITON_RETURN_IF_ERROR(check_strided(p.op, c.name, *c.t, c.rows, g.head_dim));
  for (const StridedRows& c : {StridedRows{"v", &p.v, g.max_sk}, {"out", &p.o, g.max_sq}})
    AOTRITON_RETURN_IF_ERROR(check_strided(p.op, c.name, *c.t, c.rows, g.head_dim_v));
  KernelFeatures feat;
  AOTRITON_RETURN_IF_ERROR(resolve_features(p.op, p.features, p.causal, g.dtype, dropout, g.batch, g.hq, &feat));
  if (feat.local_window) AOTRITON_RETURN_IF_ERROR(check_band(p.op, g));
  int32_t block_dv;
  AOTRITON_RETURN_IF_ERROR(
      resolve_head_dim_v(p.op, g.head_dim, g.head_dim_v, g.dtype, dropout, feat.local_window, &block_dv));
  if (g.batch == 0 || g.hq == 0 || g.max_sq == 0) return Status::kSuccess;
  if (block_dv) {  // v has its own head dim (never with dropout, so no mask)
    namespace kv = detail::kernels::attn_fwd_vdim;
    auto f = fwd_functional<kv::Functional>(p, feat, dropout);
    f.BLOCK_DV = block_dv;
    return kv::launch(fwd_inputs<kv::Inputs>(p, feat), f, stream, options);
  }
  HopperCall hopper;
  bool use_hopper;
  AOTRITON_RETURN_IF_ERROR(pick_hopper(p, feat, dropout, stream, options, &hopper, &use_hopper));
  if (use_hopper) return launch_hopper(p, hopper, stream, options);
  namespace kn = detail::kernels::attn_fwd;
  const auto f = fwd_functional<kn::Functional>(p, feat, dropout);
  kn::Args a;
  AOTRITON_RETURN_IF_ERROR(kn::make_args(fwd_inputs<kn::Inputs>(p, feat), &a));
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
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "out", p.out, p.q, p.v));
  Fwd f{op};
  f.g = Geometry{false, p.q.dtype, p.q.size(0), p.q.size(2), p.k.size(2), p.q.size(1), p.k.size(1), p.q.size(3)};
  f.g.head_dim_v = p.v.size(3);
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
  AOTRITON_RETURN_IF_ERROR(check_like_q_with_v_dim(op, "out", p.out, p.q, p.v));
  if (p.num_seqs < 0 || p.max_seqlen_q < 0 || p.max_seqlen_k < 0)
    return fail(Status::kInvalidArgument, "attn_fwd_varlen: num_seqs and max seqlens must be >= 0");
  Fwd f{op};
  f.g = Geometry{true, p.q.dtype, p.num_seqs, p.q.size(1), p.k.size(1), p.max_seqlen_q, p.max_seqlen_k, p.q.size(2),
                 p.cu_seqlens_q, p.cu_seqlens_k, p.q.size(0), p.k.size(0)};
  f.g.head_dim_v = p.v.size(2);
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
