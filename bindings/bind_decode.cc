// pyaotriton: attention over a KV cache (flash::attn_decode).
#include "aotriton/flash.h"
#include "binding_util.h"

namespace pyaotriton {

using namespace aotriton;

namespace {
flash::DecodeParams decode_params(const TensorArg<4>& q, const TensorArg<4>& k_cache, const TensorArg<4>& v_cache,
                                  const std::optional<TensorArg<4>>& k_new, const std::optional<TensorArg<4>>& v_new,
                                  const TensorArg<1>& cache_seqlens, const std::optional<TensorArg<2>>& block_table,
                                  const TensorArg<4>& out, const TensorArg<3>& lse, float scale, bool causal,
                                  int window_left, int window_right, float softcap,
                                  const std::optional<TensorArg<2>>& alibi_slopes, int num_splits, int num_sms) {
  flash::DecodeParams p;
  p.q = view<4>(q);
  p.k_cache = view<4>(k_cache);
  p.v_cache = view<4>(v_cache);
  p.k_new = opt_view<4>(k_new);
  p.v_new = opt_view<4>(v_new);
  p.cache_seqlens = view<1>(cache_seqlens);
  p.block_table = opt_view<2>(block_table);
  p.out = view<4>(out);
  p.lse = view<3>(lse);
  p.softmax_scale = scale;
  p.causal = causal;
  p.window_left = window_left;
  p.window_right = window_right;
  p.softcap = softcap;
  p.alibi_slopes = opt_view<2>(alibi_slopes);
  p.num_splits = num_splits;
  p.num_sms = num_sms;
  return p;
}
}  // namespace

#define AOTRITON_DECODE_ARGS                                                                            \
  nb::arg("q"), nb::arg("k_cache"), nb::arg("v_cache"), nb::arg("k_new").none(), nb::arg("v_new").none(), \
      nb::arg("cache_seqlens"), nb::arg("block_table").none(), nb::arg("out"), nb::arg("lse"),           \
      nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"),              \
      nb::arg("softcap"), nb::arg("alibi_slopes").none(), nb::arg("num_splits"), nb::arg("num_sms")

void bind_decode(nb::module_& m) {
  m.def(
      "attn_decode_workspace_size",
      [](const TensorArg<4>& q, const TensorArg<4>& kc, const TensorArg<4>& vc, const std::optional<TensorArg<4>>& kn,
         const std::optional<TensorArg<4>>& vn, const TensorArg<1>& cs, const std::optional<TensorArg<2>>& bt,
         const TensorArg<4>& out, const TensorArg<3>& lse, float scale, bool causal, int wl, int wr, float softcap,
         const std::optional<TensorArg<2>>& alibi, int num_splits, int num_sms) {
        flash::DecodeParams p =
            decode_params(q, kc, vc, kn, vn, cs, bt, out, lse, scale, causal, wl, wr, softcap, alibi, num_splits, num_sms);
        size_t bytes = 0;
        int32_t splits = 0;
        raise_if_error(flash::attn_decode_workspace_size(p, &bytes, &splits));
        return std::make_tuple(static_cast<uint64_t>(bytes), splits);
      },
      AOTRITON_DECODE_ARGS, "(workspace bytes, number of splits) attn_decode needs for these arguments");
  m.def(
      "attn_decode",
      [](const TensorArg<4>& q, const TensorArg<4>& kc, const TensorArg<4>& vc, const std::optional<TensorArg<4>>& kn,
         const std::optional<TensorArg<4>>& vn, const TensorArg<1>& cs, const std::optional<TensorArg<2>>& bt,
         const TensorArg<4>& out, const TensorArg<3>& lse, float scale, bool causal, int wl, int wr, float softcap,
         const std::optional<TensorArg<2>>& alibi, int num_splits, int num_sms, uintptr_t workspace,
         uint64_t workspace_bytes, uintptr_t stream, std::optional<std::string> force_config) {
        flash::DecodeParams p =
            decode_params(q, kc, vc, kn, vn, cs, bt, out, lse, scale, causal, wl, wr, softcap, alibi, num_splits, num_sms);
        p.workspace = reinterpret_cast<void*>(workspace);
        p.workspace_bytes = workspace_bytes;
        return run([&](const KernelOptions* opt) { return flash::attn_decode(p, stream_arg(stream), opt); },
                   force_config);
      },
      AOTRITON_DECODE_ARGS, nb::arg("workspace"), nb::arg("workspace_bytes"), nb::arg("stream"),
      nb::arg("force_config") = nb::none());
}

#undef AOTRITON_DECODE_ARGS

}  // namespace pyaotriton
