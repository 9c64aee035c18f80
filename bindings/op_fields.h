// The fields of an operator's Params aggregate, read from the struct itself
// (no nanobind here: test/cpu/test_adding_a_kernel_interp.py prints them for the
// walk-through's operator with a plain C++ program). bind_op.h binds from them.
#pragma once
#include <array>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "aotriton/runtime.h"

namespace pyaotriton {
namespace detail {

// What the torch layer needs of one field: its kind and, for a tensor, its rank.
template <typename T, typename = void>
struct FieldKind {
  static_assert(std::is_arithmetic_v<T>, "def_op: a field must be a TensorView, a number, a bool or an enum");
  static constexpr const char* kind = std::is_same_v<T, bool> ? "bool" : std::is_floating_point_v<T> ? "float" : "int";
  static constexpr int rank = 0;
};

template <typename E>
struct FieldKind<E, std::enable_if_t<std::is_enum_v<E>>> {
  static constexpr const char* kind = "int";
  static constexpr int rank = 0;
};

template <int R>
struct FieldKind<aotriton::TensorView<R>> {
  static constexpr const char* kind = "tensor";
  static constexpr int rank = R;
};

// The number of fields of an aggregate: the most initializers it accepts
// (C++17, the standard the binding is compiled with).
struct AnyField {
  template <typename T>
  operator T() const;  // never defined: only used in unevaluated checks
};
template <std::size_t>
using Any = AnyField;

template <typename P, typename Seq, typename = void>
struct BraceInitializable : std::false_type {};
template <typename P, std::size_t... I>
struct BraceInitializable<P, std::index_sequence<I...>, std::void_t<decltype(P{Any<I>{}...})>> : std::true_type {};

template <typename P, std::size_t N = 0>
constexpr std::size_t field_count() {
  if constexpr (N < 9 && BraceInitializable<P, std::make_index_sequence<N + 1>>::value)
    return field_count<P, N + 1>();
  else
    return N;
}

// The field types of an aggregate, as a std::tuple (1 to 8 fields).
template <typename P>
auto field_tuple(const P& p) {
  constexpr std::size_t n = field_count<P>();
  static_assert(n >= 1 && n <= 8, "def_op: Params must have 1 to 8 fields");
  if constexpr (n == 1) { const auto& [a] = p; return std::tuple(a); }
  else if constexpr (n == 2) { const auto& [a, b] = p; return std::tuple(a, b); }
  else if constexpr (n == 3) { const auto& [a, b, c] = p; return std::tuple(a, b, c); }
  else if constexpr (n == 4) { const auto& [a, b, c, d] = p; return std::tuple(a, b, c, d); }
  else if constexpr (n == 5) { const auto& [a, b, c, d, e] = p; return std::tuple(a, b, c, d, e); }
  else if constexpr (n == 6) { const auto& [a, b, c, d, e, f] = p; return std::tuple(a, b, c, d, e, f); }
  else if constexpr (n == 7) { const auto& [a, b, c, d, e, f, g] = p; return std::tuple(a, b, c, d, e, f, g); }
  else { const auto& [a, b, c, d, e, f, g, h] = p; return std::tuple(a, b, c, d, e, f, g, h); }
}

template <typename P>
using Fields = decltype(field_tuple(std::declval<const P&>()));

// (kind, rank) of every field, in order.
template <typename P, std::size_t... I>
constexpr auto field_kinds(std::index_sequence<I...>) {
  using F = Fields<P>;
  return std::array<std::pair<const char*, int>, sizeof...(I)>{
      std::pair{FieldKind<std::tuple_element_t<I, F>>::kind, FieldKind<std::tuple_element_t<I, F>>::rank}...};
}

template <typename P>
constexpr auto field_kinds() {
  return field_kinds<P>(std::make_index_sequence<std::tuple_size_v<Fields<P>>>{});
}

}  // namespace detail
}  // namespace pyaotriton
