// Shared by the pyaotriton binding files: tensor tuples -> TensorView, status
// -> Python exception, forced/ran tuning config.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include "aotriton/runtime.h"

namespace pyaotriton {

namespace nb = nanobind;

// (data_ptr, sizes, strides, dtype code): built by the torch layer.
template <int R>
using TensorArg = std::tuple<uintptr_t, std::array<int64_t, R>, std::array<int64_t, R>, int>;

template <int R>
aotriton::TensorView<R> view(const TensorArg<R>& t) {
  aotriton::TensorView<R> v;
  v.data = reinterpret_cast<void*>(std::get<0>(t));
  v.sizes = std::get<1>(t);
  v.strides = std::get<2>(t);
  v.dtype = static_cast<aotriton::DType>(std::get<3>(t));
  return v;
}

// An absent optional tensor is an empty view (data == nullptr).
template <int R>
aotriton::TensorView<R> opt_view(const std::optional<TensorArg<R>>& t) {
  return t ? view<R>(*t) : aotriton::TensorView<R>{};
}

inline aotriton::Stream stream_arg(uintptr_t s) { return aotriton::Stream{reinterpret_cast<void*>(s)}; }

// Bad arguments become ValueError, everything else RuntimeError; the message
// is the library's own (status name + details).
inline void raise_if_error(aotriton::Status s) {
  if (s == aotriton::Status::kSuccess) return;
  const char* msg = aotriton::error_string(s);
  if (s == aotriton::Status::kInvalidArgument || s == aotriton::Status::kUnsupported) throw nb::value_error(msg);
  throw std::runtime_error(msg);
}

// Runs an operator with an optional forced config; returns the config that ran.
template <typename F>
const char* run(F&& f, const std::optional<std::string>& force_config) {
  const char* ran = nullptr;
  aotriton::KernelOptions opt;
  opt.force_config = force_config ? force_config->c_str() : nullptr;
  opt.ran_config = &ran;
  raise_if_error(f(&opt));
  return ran ? ran : "";
}

void bind_moe(nb::module_& m);
void bind_flash(nb::module_& m);
void bind_decode(nb::module_& m);

}  // namespace pyaotriton
