// pyaotriton: a thin nanobind layer over the C++ API. Tensors arrive as
// (data_ptr, sizes, strides, dtype) tuples so this module never links torch;
// the torch-facing package (python/aotriton) builds those tuples.
#include <nanobind/nanobind.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <optional>
#include <string>

#include "aotriton/moe.h"
#include "aotriton/runtime.h"

namespace nb = nanobind;
using namespace aotriton;

namespace {

template <int R>
using TensorArg = std::tuple<uintptr_t, std::array<int64_t, R>, std::array<int64_t, R>, int>;

template <int R>
TensorView<R> view(const TensorArg<R>& t) {
  TensorView<R> v;
  v.data = reinterpret_cast<void*>(std::get<0>(t));
  v.sizes = std::get<1>(t);
  v.strides = std::get<2>(t);
  v.dtype = static_cast<DType>(std::get<3>(t));
  return v;
}

// Bad arguments become ValueError, everything else RuntimeError; the message
// is the library's own (status name + details).
void raise_if_error(Status s) {
  if (s == Status::kSuccess) return;
  const char* msg = error_string(s);
  if (s == Status::kInvalidArgument || s == Status::kUnsupported) throw nb::value_error(msg);
  throw std::runtime_error(msg);
}

// Runs an operator with optional forced config; returns the config that ran.
template <typename F>
const char* run(F&& f, const std::optional<std::string>& force_config) {
  const char* ran = nullptr;
  KernelOptions opt;
  opt.force_config = force_config ? force_config->c_str() : nullptr;
  opt.ran_config = &ran;
  raise_if_error(f(&opt));
  return ran ? ran : "";
}

}  // namespace

NB_MODULE(pyaotriton, m) {
  m.doc() = "aotriton: ahead-of-time compiled Triton kernels (C++ API binding)";
  m.def("version", &aotriton::version);
  m.def("build_profile", &build_profile);
  m.def("build_archs", &build_archs);
  m.def("build_kernels", &build_kernels);
  m.def("module_load_count", &module_load_count);
  m.def("image_dir", &image_dir);
  m.def(
      "set_image_dir", [](std::optional<std::string> path) { raise_if_error(set_image_dir(path ? path->c_str() : nullptr)); },
      nb::arg("path").none());
  m.attr("DTYPE_FP16") = static_cast<int>(DType::kFloat16);
  m.attr("DTYPE_BF16") = static_cast<int>(DType::kBFloat16);
  m.attr("DTYPE_FP32") = static_cast<int>(DType::kFloat32);
  m.attr("DTYPE_FP8E4M3") = static_cast<int>(DType::kFloat8E4M3);
  m.attr("DTYPE_INT8") = static_cast<int>(DType::kInt8);
  m.attr("DTYPE_UINT8") = static_cast<int>(DType::kUInt8);
  m.attr("DTYPE_INT32") = static_cast<int>(DType::kInt32);
  m.attr("DTYPE_INT64") = static_cast<int>(DType::kInt64);

  m.def(
      "act_and_mul",
      [](const TensorArg<2>& out, const TensorArg<2>& input, int activation, uintptr_t stream,
         std::optional<std::string> force_config) {
        return run(
            [&](const KernelOptions* opt) {
              return moe::act_and_mul({view<2>(out), view<2>(input), static_cast<moe::Activation>(activation)},
                                      Stream{reinterpret_cast<void*>(stream)}, opt);
            },
            force_config);
      },
      nb::arg("out"), nb::arg("input"), nb::arg("activation"), nb::arg("stream"), nb::arg("force_config") = nb::none());
  m.def(
      "moe_sum",
      [](const TensorArg<2>& out, const TensorArg<3>& input, uintptr_t stream, std::optional<std::string> force_config) {
        return run(
            [&](const KernelOptions* opt) {
              return moe::moe_sum({view<2>(out), view<3>(input)}, Stream{reinterpret_cast<void*>(stream)}, opt);
            },
            force_config);
      },
      nb::arg("out"), nb::arg("input"), nb::arg("stream"), nb::arg("force_config") = nb::none());
}
