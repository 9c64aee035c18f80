// pyaotriton: MoE operators.
#include "aotriton/moe.h"
#include "bind_op.h"
#include "binding_util.h"

namespace pyaotriton {

using namespace aotriton;

namespace {

moe::FusedExpertsParams fused_params(const TensorArg<2>& hidden, const TensorArg<3>& w1, const TensorArg<3>& w2,
                                     const TensorArg<2>& topk_weights, const TensorArg<2>& topk_ids,
                                     const TensorArg<2>& output, int activation, int quant,
                                     const std::optional<TensorArg<3>>& w1_scale,
                                     const std::optional<TensorArg<3>>& w2_scale,
                                     const std::optional<TensorArg<1>>& a1_scale,
                                     const std::optional<TensorArg<1>>& a2_scale,
                                     const std::optional<TensorArg<1>>& expert_map, int block_size) {
  moe::FusedExpertsParams p;
  p.hidden_states = view<2>(hidden);
  p.w1 = view<3>(w1);
  p.w2 = view<3>(w2);
  p.topk_weights = view<2>(topk_weights);
  p.topk_ids = view<2>(topk_ids);
  p.output = view<2>(output);
  p.activation = static_cast<moe::Activation>(activation);
  p.quant = static_cast<moe::QuantMode>(quant);
  p.w1_scale = opt_view<3>(w1_scale);
  p.w2_scale = opt_view<3>(w2_scale);
  p.a1_scale = opt_view<1>(a1_scale);
  p.a2_scale = opt_view<1>(a2_scale);
  p.expert_map = opt_view<1>(expert_map);
  p.block_size = block_size;
  return p;
}

// fused_params plus the issue-13 modes' zero points and group size.
moe::FusedExpertsParams quant_params(const TensorArg<2>& hidden, const TensorArg<3>& w1, const TensorArg<3>& w2,
                                     const TensorArg<2>& topk_weights, const TensorArg<2>& topk_ids,
                                     const TensorArg<2>& output, int activation, int quant, const TensorArg<3>& w1_scale,
                                     const TensorArg<3>& w2_scale, const std::optional<TensorArg<3>>& w1_zp,
                                     const std::optional<TensorArg<3>>& w2_zp, int group_size,
                                     const std::optional<TensorArg<1>>& expert_map, int block_size) {
  moe::FusedExpertsParams p = fused_params(hidden, w1, w2, topk_weights, topk_ids, output, activation, quant, w1_scale,
                                           w2_scale, std::nullopt, std::nullopt, expert_map, block_size);
  p.w1_zp = opt_view<3>(w1_zp);
  p.w2_zp = opt_view<3>(w2_zp);
  p.group_size = group_size;
  return p;
}

moe::FusedExpertsBackwardParams backward_params(const TensorArg<2>& dout, const TensorArg<2>& hidden,
                                                const TensorArg<3>& w1, const TensorArg<3>& w2,
                                                const TensorArg<2>& topk_weights, const TensorArg<2>& topk_ids,
                                                int activation, const TensorArg<2>& dhidden, const TensorArg<3>& dw1,
                                                const TensorArg<3>& dw2, const TensorArg<2>& dtopk_weights) {
  moe::FusedExpertsBackwardParams p;
  p.grad_output = view<2>(dout);
  p.hidden_states = view<2>(hidden);
  p.w1 = view<3>(w1);
  p.w2 = view<3>(w2);
  p.topk_weights = view<2>(topk_weights);
  p.topk_ids = view<2>(topk_ids);
  p.activation = static_cast<moe::Activation>(activation);
  p.grad_hidden_states = view<2>(dhidden);
  p.grad_w1 = view<3>(dw1);
  p.grad_w2 = view<3>(dw2);
  p.grad_topk_weights = view<2>(dtopk_weights);
  return p;
}

// The fields grouped_gemm and grouped_gemm_quant share (b_scale already a view:
// optional in one, required in the other).
moe::GroupedGemmParams gemm_params(const TensorArg<2>& a, const TensorArg<3>& b, const TensorArg<2>& c,
                                   const std::optional<TensorArg<2>>& a_scale, TensorView<3> b_scale,
                                   const std::optional<TensorArg<2>>& topk_weights, const TensorArg<1>& sorted_ids,
                                   const TensorArg<1>& expert_ids, const TensorArg<1>& ntpp, int top_k, int block_size,
                                   bool mul_routed_weight, int quant) {
  moe::GroupedGemmParams p;
  p.a = view<2>(a);
  p.b = view<3>(b);
  p.c = view<2>(c);
  p.a_scale = opt_view<2>(a_scale);
  p.b_scale = b_scale;
  p.topk_weights = opt_view<2>(topk_weights);
  p.sorted_token_ids = view<1>(sorted_ids);
  p.expert_ids = view<1>(expert_ids);
  p.num_tokens_post_padded = view<1>(ntpp);
  p.top_k = top_k;
  p.block_size = block_size;
  p.mul_routed_weight = mul_routed_weight;
  p.quant = static_cast<moe::QuantMode>(quant);
  return p;
}

template <typename Tuple, typename F>
void with_names(const Tuple& names, F&& f) {
  std::apply([&](const auto&... n) { f(n...); }, names);
}

// An operator that needs a workspace, bound as two functions whose leading
// arguments (args) are the same and become its params through make:
//   size_name(args...) -> bytes
//   call_name(args..., workspace, workspace_bytes, stream, force_config=None, extra...) -> the config that ran
// Extra: the types of call-only trailing arguments, stored by set_extra(p, extra...).
template <typename... Extra, typename P, typename... A, typename SizeFn, typename CallFn, typename SetExtra,
          typename ArgNames, typename ExtraNames>
void def_workspace_op(nb::module_& m, const char* size_name, const char* call_name, P (*make)(A...), SizeFn size,
                      CallFn call, const ArgNames& arg_names, SetExtra set_extra, const ExtraNames& extra_names) {
  with_names(arg_names, [&](const auto&... names) {
    m.def(
        size_name,
        [make, size](A... a) {
          size_t bytes = 0;
          raise_if_error(size(make(a...), &bytes));
          return bytes;
        },
        names...);
  });
  auto call_names = std::tuple_cat(arg_names,
                                   std::make_tuple(nb::arg("workspace"), nb::arg("workspace_bytes"), nb::arg("stream"),
                                                   nb::arg("force_config") = nb::none()),
                                   extra_names);
  with_names(call_names, [&](const auto&... names) {
    m.def(
        call_name,
        [make, call, set_extra](A... a, uintptr_t workspace, size_t workspace_bytes, uintptr_t stream,
                                std::optional<std::string> force_config, Extra... extra) {
          P p = make(a...);
          p.workspace = reinterpret_cast<void*>(workspace);
          p.workspace_bytes = workspace_bytes;
          set_extra(p, extra...);
          return run([&](const KernelOptions* opt) { return call(p, stream_arg(stream), opt); }, force_config);
        },
        names...);
  });
}

const auto no_extra = [](auto&) {};

// Argument names of fused_params / quant_params / backward_params.
auto fused_arg_names() {
  return std::make_tuple(nb::arg("hidden_states"), nb::arg("w1"), nb::arg("w2"), nb::arg("topk_weights"),
                         nb::arg("topk_ids"), nb::arg("output"), nb::arg("activation"), nb::arg("quant"),
                         nb::arg("w1_scale").none(), nb::arg("w2_scale").none(), nb::arg("a1_scale").none(),
                         nb::arg("a2_scale").none(), nb::arg("expert_map").none(), nb::arg("block_size"));
}

auto quant_arg_names() {
  return std::make_tuple(nb::arg("hidden_states"), nb::arg("w1"), nb::arg("w2"), nb::arg("topk_weights"),
                         nb::arg("topk_ids"), nb::arg("output"), nb::arg("activation"), nb::arg("quant"),
                         nb::arg("w1_scale"), nb::arg("w2_scale"), nb::arg("w1_zp").none(), nb::arg("w2_zp").none(),
                         nb::arg("group_size"), nb::arg("expert_map").none(), nb::arg("block_size"));
}

auto backward_arg_names() {
  return std::make_tuple(nb::arg("grad_output"), nb::arg("hidden_states"), nb::arg("w1"), nb::arg("w2"),
                         nb::arg("topk_weights"), nb::arg("topk_ids"), nb::arg("activation"),
                         nb::arg("grad_hidden_states"), nb::arg("grad_w1"), nb::arg("grad_w2"),
                         nb::arg("grad_topk_weights"));
}

// The issue-13 quantization modes (fp8 per channel, int8 w8a16, int4 w4a16):
// separate entry points taking the extra zero-point / group arguments.
void bind_moe_quant(nb::module_& m) {
  m.def(
      "per_token_quant_fp8",
      [](const TensorArg<2>& x, const TensorArg<2>& q, const TensorArg<2>& scales, uintptr_t stream) {
        raise_if_error(moe::per_token_quant_fp8({view<2>(x), view<2>(q), view<2>(scales)}, stream_arg(stream)));
      },
      nb::arg("x"), nb::arg("q"), nb::arg("scales"), nb::arg("stream"));
  m.def(
      "grouped_gemm_quant",
      [](const TensorArg<2>& a, const TensorArg<3>& b, const TensorArg<2>& c, const std::optional<TensorArg<2>>& a_scale,
         const TensorArg<3>& b_scale, const std::optional<TensorArg<3>>& b_zp, int group_size,
         const std::optional<TensorArg<2>>& topk_weights, const TensorArg<1>& sorted_ids, const TensorArg<1>& expert_ids,
         const TensorArg<1>& ntpp, int top_k, int block_size, bool mul_routed_weight, int quant, uintptr_t stream,
         std::optional<std::string> force_config) {
        moe::GroupedGemmParams p = gemm_params(a, b, c, a_scale, view<3>(b_scale), topk_weights, sorted_ids, expert_ids,
                                               ntpp, top_k, block_size, mul_routed_weight, quant);
        p.b_zp = opt_view<3>(b_zp);
        p.group_size = group_size;
        return run([&](const KernelOptions* opt) { return moe::grouped_gemm(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("a"), nb::arg("b"), nb::arg("c"), nb::arg("a_scale").none(), nb::arg("b_scale"), nb::arg("b_zp").none(),
      nb::arg("group_size"), nb::arg("topk_weights").none(), nb::arg("sorted_token_ids"), nb::arg("expert_ids"),
      nb::arg("num_tokens_post_padded"), nb::arg("top_k"), nb::arg("block_size"), nb::arg("mul_routed_weight"),
      nb::arg("quant"), nb::arg("stream"), nb::arg("force_config") = nb::none());
  def_workspace_op(m, "fused_experts_quant_workspace_size", "fused_experts_quant", quant_params,
                   moe::fused_experts_workspace_size, moe::fused_experts, quant_arg_names(), no_extra, std::make_tuple());
}

}  // namespace

void bind_moe(nb::module_& m) {
  // Simple operators (bind_op.h): (fields..., stream, force_config=None) -> the config that ran.
  def_op(m, "act_and_mul", moe::act_and_mul, {"out", "input", "activation"});
  def_op(m, "moe_sum", moe::moe_sum, {"out", "x"});
  def_op(m, "topk_softmax", moe::topk_softmax, {"logits", "topk_weights", "topk_ids", "renormalize"});
  m.def("moe_align_max_padded", &moe::moe_align_max_padded, nb::arg("numel"), nb::arg("num_experts"),
        nb::arg("block_size"));
  m.def("moe_align_workspace_size", &moe::moe_align_workspace_size, nb::arg("numel"), nb::arg("num_experts"));
  m.def(
      "moe_gemm_block_size", [](int64_t num_tokens, bool aligned) { return moe::moe_gemm_block_size(num_tokens, aligned); },
      nb::arg("num_tokens"), nb::arg("aligned") = true);
  m.def(
      "moe_gemm_block_size_for",
      [](int64_t num_tokens, int64_t topk, int64_t num_experts, bool aligned) {
        return moe::moe_gemm_block_size(num_tokens, topk, num_experts, aligned);
      },
      nb::arg("num_tokens"), nb::arg("topk"), nb::arg("num_experts"), nb::arg("aligned") = true);
  m.def(
      "moe_align_block_size",
      [](const TensorArg<2>& topk_ids, int num_experts, int block_size, const std::optional<TensorArg<1>>& expert_map,
         const TensorArg<1>& sorted_ids, const TensorArg<1>& expert_ids, const TensorArg<1>& ntpp, uintptr_t workspace,
         size_t workspace_bytes, uintptr_t stream) {
        moe::MoeAlignParams p;
        p.topk_ids = view<2>(topk_ids);
        p.num_experts = num_experts;
        p.block_size = block_size;
        p.expert_map = opt_view<1>(expert_map);
        p.sorted_token_ids = view<1>(sorted_ids);
        p.expert_ids = view<1>(expert_ids);
        p.num_tokens_post_padded = view<1>(ntpp);
        p.workspace = reinterpret_cast<void*>(workspace);
        p.workspace_bytes = workspace_bytes;
        raise_if_error(moe::moe_align_block_size(p, stream_arg(stream)));
      },
      nb::arg("topk_ids"), nb::arg("num_experts"), nb::arg("block_size"), nb::arg("expert_map").none(),
      nb::arg("sorted_token_ids"), nb::arg("expert_ids"), nb::arg("num_tokens_post_padded"), nb::arg("workspace"),
      nb::arg("workspace_bytes"), nb::arg("stream"));
  m.def(
      "grouped_gemm",
      [](const TensorArg<2>& a, const TensorArg<3>& b, const TensorArg<2>& c, const std::optional<TensorArg<2>>& a_scale,
         const std::optional<TensorArg<3>>& b_scale, const std::optional<TensorArg<2>>& topk_weights,
         const TensorArg<1>& sorted_ids, const TensorArg<1>& expert_ids, const TensorArg<1>& ntpp, int top_k,
         int block_size, bool mul_routed_weight, int quant, uintptr_t stream, std::optional<std::string> force_config) {
        moe::GroupedGemmParams p = gemm_params(a, b, c, a_scale, opt_view<3>(b_scale), topk_weights, sorted_ids,
                                               expert_ids, ntpp, top_k, block_size, mul_routed_weight, quant);
        return run([&](const KernelOptions* opt) { return moe::grouped_gemm(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("a"), nb::arg("b"), nb::arg("c"), nb::arg("a_scale").none(), nb::arg("b_scale").none(),
      nb::arg("topk_weights").none(), nb::arg("sorted_token_ids"), nb::arg("expert_ids"),
      nb::arg("num_tokens_post_padded"), nb::arg("top_k"), nb::arg("block_size"), nb::arg("mul_routed_weight"),
      nb::arg("quant"), nb::arg("stream"), nb::arg("force_config") = nb::none());
  m.def(
      "per_token_group_quant_fp8",
      [](const TensorArg<2>& x, const TensorArg<2>& q, const TensorArg<2>& scales, int group_size, uintptr_t stream) {
        raise_if_error(moe::per_token_group_quant_fp8({view<2>(x), view<2>(q), view<2>(scales), group_size},
                                                      stream_arg(stream)));
      },
      nb::arg("x"), nb::arg("q"), nb::arg("scales"), nb::arg("group_size"), nb::arg("stream"));
  m.def("per_tensor_quant_workspace_size", &moe::per_tensor_quant_workspace_size, nb::arg("rows"));
  m.def(
      "per_tensor_quant_fp8",
      [](const TensorArg<2>& x, const TensorArg<2>& q, const TensorArg<1>& scale, bool dynamic_scale,
         uintptr_t workspace, size_t workspace_bytes, uintptr_t stream) {
        moe::PerTensorQuantParams p;
        p.x = view<2>(x);
        p.q = view<2>(q);
        p.scale = view<1>(scale);
        p.dynamic_scale = dynamic_scale;
        p.workspace = reinterpret_cast<void*>(workspace);
        p.workspace_bytes = workspace_bytes;
        raise_if_error(moe::per_tensor_quant_fp8(p, stream_arg(stream)));
      },
      nb::arg("x"), nb::arg("q"), nb::arg("scale"), nb::arg("dynamic_scale"), nb::arg("workspace"),
      nb::arg("workspace_bytes"), nb::arg("stream"));
  def_workspace_op<bool>(
      m, "fused_experts_workspace_size", "fused_experts", fused_params, moe::fused_experts_workspace_size,
      moe::fused_experts, fused_arg_names(),
      [](moe::FusedExpertsParams& p, bool on_input) { p.apply_router_weight_on_input = on_input; },
      std::make_tuple(nb::arg("apply_router_weight_on_input") = false));
  m.def(
      "grouped_topk",
      [](const TensorArg<2>& logits, const std::optional<TensorArg<1>>& bias, const TensorArg<2>& weights,
         const TensorArg<2>& ids, int num_expert_group, int topk_group, int scoring, bool renormalize,
         float routed_scaling_factor, uintptr_t stream, std::optional<std::string> force_config) {
        moe::GroupedTopkParams p;
        p.logits = view<2>(logits);
        p.e_score_correction_bias = opt_view<1>(bias);
        p.topk_weights = view<2>(weights);
        p.topk_ids = view<2>(ids);
        p.num_expert_group = num_expert_group;
        p.topk_group = topk_group;
        p.scoring = static_cast<moe::Scoring>(scoring);
        p.renormalize = renormalize;
        p.routed_scaling_factor = routed_scaling_factor;
        return run([&](const KernelOptions* opt) { return moe::grouped_topk(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("logits"), nb::arg("e_score_correction_bias").none(), nb::arg("topk_weights"), nb::arg("topk_ids"),
      nb::arg("num_expert_group"), nb::arg("topk_group"), nb::arg("scoring"), nb::arg("renormalize"),
      nb::arg("routed_scaling_factor"), nb::arg("stream"), nb::arg("force_config") = nb::none());
  m.def("ep_dispatch_workspace_size", &moe::ep_dispatch_workspace_size, nb::arg("numel"),
        nb::arg("num_local_experts"));
  m.def(
      "ep_dispatch",
      [](const TensorArg<2>& topk_ids, const std::optional<TensorArg<1>>& expert_map, int num_local_experts,
         const TensorArg<1>& sorted_token_ids, const TensorArg<2>& inverse, const TensorArg<1>& expert_offsets,
         uintptr_t workspace, size_t workspace_bytes, uintptr_t stream, std::optional<std::string> force_config) {
        moe::EpDispatchParams p;
        p.topk_ids = view<2>(topk_ids);
        p.expert_map = opt_view<1>(expert_map);
        p.num_local_experts = num_local_experts;
        p.sorted_token_ids = view<1>(sorted_token_ids);
        p.inverse = view<2>(inverse);
        p.expert_offsets = view<1>(expert_offsets);
        p.workspace = reinterpret_cast<void*>(workspace);
        p.workspace_bytes = workspace_bytes;
        return run([&](const KernelOptions* opt) { return moe::ep_dispatch(p, stream_arg(stream), opt); },
                   force_config);
      },
      nb::arg("topk_ids"), nb::arg("expert_map").none(), nb::arg("num_local_experts"), nb::arg("sorted_token_ids"),
      nb::arg("inverse"), nb::arg("expert_offsets"), nb::arg("workspace"), nb::arg("workspace_bytes"),
      nb::arg("stream"), nb::arg("force_config") = nb::none());
  bind_moe_quant(m);
  // fused_experts backward: (grad_output, hidden, w1, w2, topk_weights, topk_ids, activation, grad_hidden,
  // grad_w1, grad_w2, grad_topk_weights); the workspace query takes the same views.
  def_workspace_op(m, "fused_experts_backward_workspace_size", "fused_experts_backward", backward_params,
                   moe::fused_experts_backward_workspace_size, moe::fused_experts_backward, backward_arg_names(),
                   no_extra, std::make_tuple());
}

}  // namespace pyaotriton
