// def_op: the binding of a simple operator in one line. A simple operator is
//   Status op(const Params& params, Stream stream[, const KernelOptions* options])
// where Params is an aggregate of TensorView<R>, floating-point, integer, bool
// and enum fields (no pointers: workspaces and optional tensors need a
// hand-written binding). Its fields are read from the struct (op_fields.h), so
//   def_op(m, "moe_sum", moe::moe_sum, {"out", "x"});
// binds pyaotriton.moe_sum(out, x, stream, force_config=None) -> the config
// that ran (tensors as TensorArg tuples, enums as ints; without KernelOptions:
// (out, x, stream) -> None) and records the fields in pyaotriton.OP_SPECS, from
// which the torch layer registers the custom op (aotriton/_simple_op.py).
#pragma once
#include <array>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "binding_util.h"
#include "op_fields.h"

namespace pyaotriton {
namespace detail {

// The Python-facing form of one field (Py) and its conversion back (to).
template <typename T, typename = void>
struct PyField {
  using Py = T;
  static T to(const Py& v) { return v; }
};

template <typename E>
struct PyField<E, std::enable_if_t<std::is_enum_v<E>>> {
  using Py = std::underlying_type_t<E>;
  static E to(const Py& v) { return static_cast<E>(v); }
};

template <int R>
struct PyField<aotriton::TensorView<R>> {
  using Py = TensorArg<R>;
  static aotriton::TensorView<R> to(const Py& t) { return view<R>(t); }
};

template <typename P, bool Options, typename Tuple>
struct OpBinder;

template <typename P, bool Options, typename... F>
struct OpBinder<P, Options, std::tuple<F...>> {
  template <typename Fn, std::size_t... I>
  static void def(nb::module_& m, const char* name, Fn fn, const std::array<const char*, sizeof...(F)>& names,
                  std::index_sequence<I...>) {
    if constexpr (Options) {
      m.def(
          name,
          [fn](const typename PyField<F>::Py&... a, uintptr_t stream, std::optional<std::string> force_config) {
            return run([&](const aotriton::KernelOptions* opt) { return fn(P{PyField<F>::to(a)...}, stream_arg(stream), opt); },
                       force_config);
          },
          nb::arg(names[I])..., nb::arg("stream"), nb::arg("force_config") = nb::none());
    } else {
      m.def(
          name,
          [fn](const typename PyField<F>::Py&... a, uintptr_t stream) {
            raise_if_error(fn(P{PyField<F>::to(a)...}, stream_arg(stream)));
          },
          nb::arg(names[I])..., nb::arg("stream"));
    }
    constexpr auto kinds = field_kinds<P>();
    nb::list fields;
    for (std::size_t i = 0; i < kinds.size(); ++i) fields.append(nb::make_tuple(names[i], kinds[i].first, kinds[i].second));
    if (!nb::hasattr(m, "OP_SPECS")) m.attr("OP_SPECS") = nb::dict();
    nb::dict specs = nb::borrow<nb::dict>(m.attr("OP_SPECS"));
    specs[name] = nb::make_tuple(nb::tuple(fields), Options);
  }
};

template <typename P, bool Options, std::size_t N, typename Fn>
void def_op_impl(nb::module_& m, const char* name, Fn fn, const char* const (&names)[N]) {
  using F = Fields<P>;
  static_assert(N == std::tuple_size_v<F>, "def_op: give one name per field of the operator's Params");
  std::array<const char*, N> list;
  for (std::size_t i = 0; i < N; ++i) list[i] = names[i];
  OpBinder<P, Options, F>::def(m, name, fn, list, std::make_index_sequence<N>{});
}

}  // namespace detail

// The operator's fields, named in order: a wrong count does not compile.
template <typename P, std::size_t N>
void def_op(nb::module_& m, const char* name, aotriton::Status (*fn)(const P&, aotriton::Stream) noexcept,
            const char* const (&names)[N]) {
  detail::def_op_impl<P, false>(m, name, fn, names);
}

template <typename P, std::size_t N>
void def_op(nb::module_& m, const char* name,
            aotriton::Status (*fn)(const P&, aotriton::Stream, const aotriton::KernelOptions*) noexcept,
            const char* const (&names)[N]) {
  detail::def_op_impl<P, true>(m, name, fn, names);
}

}  // namespace pyaotriton
