// pyaotriton: a thin nanobind layer over the C++ API. Tensors arrive as
// (data_ptr, sizes, strides, dtype) tuples so this module never links torch;
// the torch-facing package (python/aotriton) builds those tuples.
#include "binding_util.h"
#include "runtime_api.h"

using namespace pyaotriton;
using aotriton::DType;

NB_MODULE(pyaotriton, m) {
  m.doc() = "aotriton: ahead-of-time compiled Triton kernels (C++ API binding)";
  m.def("version", &aotriton::version);
  m.def("build_profile", &aotriton::build_profile);
  m.def("build_archs", &aotriton::build_archs);
  m.def("build_kernels", &aotriton::build_kernels);
  m.def("module_load_count", &aotriton::module_load_count);
  m.def("image_dir", &aotriton::image_dir);
  m.def("set_load_all_configs", &aotriton::set_load_all_configs, nb::arg("on"));
  m.def("load_all_configs", &aotriton::load_all_configs);
  m.def("set_programmatic_dependent_launch", &aotriton::set_programmatic_dependent_launch, nb::arg("on"));
  m.def("programmatic_dependent_launch", &aotriton::programmatic_dependent_launch);
  m.def(
      "set_image_dir",
      [](std::optional<std::string> path) { raise_if_error(aotriton::set_image_dir(path ? path->c_str() : nullptr)); },
      nb::arg("path").none());
  m.def(
      "ensure_current_device", [](int ordinal) { raise_if_error(aotriton::ensure_current_device(ordinal)); },
      nb::arg("ordinal"));
  m.attr("DTYPE_FP16") = static_cast<int>(DType::kFloat16);
  m.attr("DTYPE_BF16") = static_cast<int>(DType::kBFloat16);
  m.attr("DTYPE_FP32") = static_cast<int>(DType::kFloat32);
  m.attr("DTYPE_FP8E4M3") = static_cast<int>(DType::kFloat8E4M3);
  m.attr("DTYPE_INT8") = static_cast<int>(DType::kInt8);
  m.attr("DTYPE_UINT8") = static_cast<int>(DType::kUInt8);
  m.attr("DTYPE_INT32") = static_cast<int>(DType::kInt32);
  m.attr("DTYPE_INT64") = static_cast<int>(DType::kInt64);
  bind_moe(m);
  bind_flash(m);
  bind_decode(m);
  // For _aotriton_torch (runtime_api.h): the entry points of this module's runtime.
  static const RuntimeApi api{kRuntimeApiShape.struct_size, kRuntimeApiShape.fwd_params_size,
                              kRuntimeApiShape.act_and_mul_params_size, &aotriton::flash::attn_fwd,
                              &aotriton::moe::act_and_mul, &aotriton::error_string,
                              &aotriton::ensure_current_device};
  m.attr("_runtime_api") = nb::capsule(&api, kRuntimeApiCapsule);
}
