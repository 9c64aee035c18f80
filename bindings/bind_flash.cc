// pyaotriton: flash attention operators.
#include "aotriton/flash.h"
#include "binding_util.h"

namespace pyaotriton {

using namespace aotriton;

namespace {
// The optional features, as the trailing keyword arguments of every flash binding.
flash::Features features(int window_left, int window_right, float softcap,
                         const std::optional<TensorArg<2>>& alibi_slopes) {
  flash::Features f;
  f.window_left = window_left;
  f.window_right = window_right;
  f.softcap = softcap;
  f.alibi_slopes = opt_view<2>(alibi_slopes);
  return f;
}

// The softmax and dropout fields every flash params struct has.
template <typename P>
void set_softmax(P& p, float scale, int causal, float dropout_p, uintptr_t seed, uintptr_t offset,
                 const flash::Features& features) {
  p.softmax_scale = scale;
  p.causal = static_cast<flash::CausalType>(causal);
  p.dropout_p = dropout_p;
  p.philox_seed = reinterpret_cast<const int64_t*>(seed);
  p.philox_offset = reinterpret_cast<const int64_t*>(offset);
  p.features = features;
}

// The sequence fields of the varlen params structs.
template <typename P>
void set_varlen(P& p, uintptr_t cu_q, uintptr_t cu_k, int num_seqs, int max_sq, int max_sk) {
  p.cu_seqlens_q = reinterpret_cast<const int32_t*>(cu_q);
  p.cu_seqlens_k = reinterpret_cast<const int32_t*>(cu_k);
  p.num_seqs = num_seqs;
  p.max_seqlen_q = max_sq;
  p.max_seqlen_k = max_sk;
}

#define AOTRITON_FEATURE_PARAMS \
  int window_left, int window_right, float softcap, const std::optional<TensorArg<2>>& alibi_slopes
#define AOTRITON_FEATURE_ARGS                                                          \
  nb::arg("window_left") = -1, nb::arg("window_right") = -1, nb::arg("softcap") = 0.f, \
      nb::arg("alibi_slopes").none() = nb::none()
}  // namespace

void bind_flash(nb::module_& m) {
  m.def(
      "attn_fwd",
      [](const TensorArg<4>& q, const TensorArg<4>& k, const TensorArg<4>& v, const TensorArg<4>& out,
         const TensorArg<3>& lse, float scale, int causal, float dropout_p, uintptr_t seed, uintptr_t offset,
         const std::optional<TensorArg<4>>& mask, uintptr_t stream, std::optional<std::string> force_config,
         AOTRITON_FEATURE_PARAMS) {
        flash::FwdParams p;
        p.q = view<4>(q);
        p.k = view<4>(k);
        p.v = view<4>(v);
        p.out = view<4>(out);
        p.lse = view<3>(lse);
        p.dropout_mask = opt_view<4>(mask);
        set_softmax(p, scale, causal, dropout_p, seed, offset,
                    features(window_left, window_right, softcap, alibi_slopes));
        return run([&](const KernelOptions* opt) { return flash::attn_fwd(p, stream_arg(stream), opt); }, force_config);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::arg("scale"), nb::arg("causal"),
      nb::arg("dropout_p"), nb::arg("philox_seed"), nb::arg("philox_offset"), nb::arg("mask").none(),
      nb::arg("stream"), nb::arg("force_config") = nb::none(), AOTRITON_FEATURE_ARGS);
  m.def(
      "attn_fwd_varlen",
      [](const TensorArg<3>& q, const TensorArg<3>& k, const TensorArg<3>& v, const TensorArg<3>& out,
         const TensorArg<2>& lse, uintptr_t cu_q, uintptr_t cu_k, int num_seqs, int max_sq, int max_sk, float scale,
         int causal, float dropout_p, uintptr_t seed, uintptr_t offset, const std::optional<TensorArg<4>>& mask,
         uintptr_t stream, std::optional<std::string> force_config, AOTRITON_FEATURE_PARAMS) {
        flash::FwdVarlenParams p;
        p.q = view<3>(q);
        p.k = view<3>(k);
        p.v = view<3>(v);
        p.out = view<3>(out);
        p.lse = view<2>(lse);
        set_varlen(p, cu_q, cu_k, num_seqs, max_sq, max_sk);
        p.dropout_mask = opt_view<4>(mask);
        set_softmax(p, scale, causal, dropout_p, seed, offset,
                    features(window_left, window_right, softcap, alibi_slopes));
        return run([&](const KernelOptions* opt) { return flash::attn_fwd_varlen(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::arg("cu_seqlens_q"),
      nb::arg("cu_seqlens_k"), nb::arg("num_seqs"), nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("scale"),
      nb::arg("causal"), nb::arg("dropout_p"), nb::arg("philox_seed"), nb::arg("philox_offset"), nb::arg("mask").none(),
      nb::arg("stream"), nb::arg("force_config") = nb::none(), AOTRITON_FEATURE_ARGS);
  m.def(
      "attn_bwd",
      [](const TensorArg<4>& q, const TensorArg<4>& k, const TensorArg<4>& v, const TensorArg<4>& out,
         const TensorArg<4>& dout, const TensorArg<3>& lse, const TensorArg<4>& dq, const TensorArg<4>& dk,
         const TensorArg<4>& dv, const TensorArg<3>& delta, float scale, int causal, float dropout_p, uintptr_t seed,
         uintptr_t offset, uintptr_t stream, std::optional<std::string> force_config,
         const std::optional<TensorArg<4>>& dq_accum, AOTRITON_FEATURE_PARAMS) {
        flash::BwdParams p;
        p.q = view<4>(q), p.k = view<4>(k), p.v = view<4>(v), p.out = view<4>(out), p.dout = view<4>(dout);
        p.lse = view<3>(lse), p.dq = view<4>(dq), p.dk = view<4>(dk), p.dv = view<4>(dv), p.delta = view<3>(delta);
        p.dq_accum = opt_view<4>(dq_accum);
        set_softmax(p, scale, causal, dropout_p, seed, offset,
                    features(window_left, window_right, softcap, alibi_slopes));
        return run([&](const KernelOptions* opt) { return flash::attn_bwd(p, stream_arg(stream), opt); }, force_config);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("dout"), nb::arg("lse"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("delta"), nb::arg("scale"), nb::arg("causal"), nb::arg("dropout_p"),
      nb::arg("philox_seed"), nb::arg("philox_offset"), nb::arg("stream"), nb::arg("force_config") = nb::none(),
      nb::arg("dq_accum").none() = nb::none(), AOTRITON_FEATURE_ARGS);
  m.def(
      "attn_bwd_varlen",
      [](const TensorArg<3>& q, const TensorArg<3>& k, const TensorArg<3>& v, const TensorArg<3>& out,
         const TensorArg<3>& dout, const TensorArg<2>& lse, const TensorArg<3>& dq, const TensorArg<3>& dk,
         const TensorArg<3>& dv, const TensorArg<2>& delta, uintptr_t cu_q, uintptr_t cu_k, int num_seqs, int max_sq,
         int max_sk, float scale, int causal, float dropout_p, uintptr_t seed, uintptr_t offset, uintptr_t stream,
         std::optional<std::string> force_config, AOTRITON_FEATURE_PARAMS) {
        flash::BwdVarlenParams p;
        p.q = view<3>(q), p.k = view<3>(k), p.v = view<3>(v), p.out = view<3>(out), p.dout = view<3>(dout);
        p.lse = view<2>(lse), p.dq = view<3>(dq), p.dk = view<3>(dk), p.dv = view<3>(dv), p.delta = view<2>(delta);
        set_varlen(p, cu_q, cu_k, num_seqs, max_sq, max_sk);
        set_softmax(p, scale, causal, dropout_p, seed, offset,
                    features(window_left, window_right, softcap, alibi_slopes));
        return run([&](const KernelOptions* opt) { return flash::attn_bwd_varlen(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("dout"), nb::arg("lse"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("delta"), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"),
      nb::arg("num_seqs"), nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("scale"), nb::arg("causal"),
      nb::arg("dropout_p"), nb::arg("philox_seed"), nb::arg("philox_offset"), nb::arg("stream"),
      nb::arg("force_config") = nb::none(), AOTRITON_FEATURE_ARGS);
}

}  // namespace pyaotriton
