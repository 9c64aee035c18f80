// Argument validation shared by the operators: every failure names the
// tensor and what is wrong with it.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "aotriton/runtime.h"
#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

std::string shape_string(const int64_t* sizes, int rank);

// Sizes non-negative, data non-null when non-empty, innermost dim contiguous
// (stride 1) when `inner_contiguous`, dtype among `allowed` (if given).
Status check_view(const char* op, const char* name, const void* data, const int64_t* sizes, const int64_t* strides,
                  int rank, bool inner_contiguous);

template <int R>
Status check_tensor(const char* op, const char* name, const TensorView<R>& t, bool inner_contiguous = true) {
  return check_view(op, name, t.data, t.sizes.data(), t.strides.data(), R, inner_contiguous);
}

Status check_dtype(const char* op, const char* name, DType got, DType want);

// Fails unless `value` fits the kernel's int32 argument.
Status check_i32(const char* op, const char* what, int64_t value);

// *out = the product of `factors` (all >= 0); fails with kUnsupported naming
// `what` when it overflows int64 (sizes are multiplied only through this).
Status checked_mul(const char* op, const char* what, std::initializer_list<int64_t> factors, int64_t* out);

// Fails unless (rows - 1) * row_stride + cols, the largest offset a kernel
// forms in 32-bit arithmetic from a row index, fits int32 (0 rows: nothing).
Status check_i32_offset(const char* op, const char* what, int64_t rows, int64_t row_stride, int64_t cols);

// The bytes a tensor spans, [begin, end); empty for an empty or absent tensor.
// Only for views that passed check_view (their extent fits int64).
struct Region {
  const char* name;
  uintptr_t begin, end;
};
Region span_of(const char* name, const void* data, const int64_t* sizes, const int64_t* strides, int rank,
               DType dtype);
template <int R>
Region span_of(const char* name, const TensorView<R>& t) {
  return span_of(name, t.data, t.sizes.data(), t.strides.data(), R, t.dtype);
}
inline Region bytes_of(const char* name, const void* data, size_t bytes) {
  const auto b = reinterpret_cast<uintptr_t>(data);
  return {name, b, data ? b + bytes : b};
}

// An output whose elements share memory (a stride of 0 on a dimension of size
// > 1, or strides that interleave) would be written by several threads at once.
Status check_no_self_overlap(const char* op, const char* name, const int64_t* sizes, const int64_t* strides, int rank);
template <int R>
Status check_no_self_overlap(const char* op, const char* name, const TensorView<R>& t) {
  return check_no_self_overlap(op, name, t.sizes.data(), t.strides.data(), R);
}

// No output overlaps another output or an input (the kernels read and write
// them concurrently): kInvalidArgument naming both.
Status check_no_overlap(const char* op, std::initializer_list<Region> outputs, std::initializer_list<Region> inputs);

// Fails unless a.sizes[ai] == b.sizes[bi] (names the tensors and dims).
Status check_same_dim(const char* op, const char* a, int64_t a_size, int ai, const char* b, int64_t b_size, int bi);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
