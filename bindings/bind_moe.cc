// pyaotriton: MoE operators.
#include "aotriton/moe.h"
#include "binding_util.h"

namespace pyaotriton {

using namespace aotriton;

void bind_moe(nb::module_& m) {
  m.def(
      "act_and_mul",
      [](const TensorArg<2>& out, const TensorArg<2>& input, int activation, uintptr_t stream,
         std::optional<std::string> force_config) {
        return run(
            [&](const KernelOptions* opt) {
              return moe::act_and_mul({view<2>(out), view<2>(input), static_cast<moe::Activation>(activation)},
                                      stream_arg(stream), opt);
            },
            force_config);
      },
      nb::arg("out"), nb::arg("input"), nb::arg("activation"), nb::arg("stream"), nb::arg("force_config") = nb::none());
  m.def(
      "moe_sum",
      [](const TensorArg<2>& out, const TensorArg<3>& input, uintptr_t stream, std::optional<std::string> force_config) {
        return run(
            [&](const KernelOptions* opt) { return moe::moe_sum({view<2>(out), view<3>(input)}, stream_arg(stream), opt); },
            force_config);
      },
      nb::arg("out"), nb::arg("input"), nb::arg("stream"), nb::arg("force_config") = nb::none());
}

}  // namespace pyaotriton
