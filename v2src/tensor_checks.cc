#include "tensor_checks.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

const char* dtype_name(DType d) noexcept {
  switch (d) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "fp32";
    case DType::kFloat8E4M3: return "fp8e4m3";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "unknown-dtype";
}

int dtype_size(DType d) noexcept {
  switch (d) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat8E4M3:
    case DType::kInt8:
    case DType::kUInt8: return 1;
    case DType::kInt64: return 8;
  }
  return 0;
}

namespace detail {

std::string shape_string(const int64_t* sizes, int rank) {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

Status check_view(const char* op, const char* name, const void* data, const int64_t* sizes, const int64_t* strides,
                  int rank, bool inner_contiguous) {
  bool empty = false;
  for (int i = 0; i < rank; ++i) {
    if (sizes[i] < 0)
      return fail(Status::kInvalidArgument,
                  std::string(op) + ": " + name + " has a negative size " + shape_string(sizes, rank));
    if (strides[i] < 0)
      return fail(Status::kInvalidArgument,
                  std::string(op) + ": " + name + " has a negative stride in dim " + std::to_string(i));
    empty = empty || sizes[i] == 0;
  }
  if (!empty && !data)
    return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is a null pointer");
  // numel() and every offset into the tensor must be representable.
  int64_t numel = 1, extent = 0;
  for (int i = 0; i < rank; ++i) {
    int64_t span = 0;
    if (__builtin_mul_overflow(numel, sizes[i], &numel) ||
        (sizes[i] > 0 && (__builtin_mul_overflow(sizes[i] - 1, strides[i], &span) ||
                          __builtin_add_overflow(extent, span, &extent))))
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " of shape " + shape_string(sizes, rank) +
                                                " is too large (its size or extent overflows 64-bit integers)");
  }
  if (inner_contiguous && rank > 0 && sizes[rank - 1] > 1 && strides[rank - 1] != 1)
    return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " must be contiguous in its last dim (stride " +
                                              std::to_string(strides[rank - 1]) + ")");
  return Status::kSuccess;
}

Status check_dtype(const char* op, const char* name, DType got, DType want) {
  if (got == want) return Status::kSuccess;
  return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is " + dtype_name(got) + ", expected " +
                                            dtype_name(want));
}

Status check_i32(const char* op, const char* what, int64_t value) {
  if (value >= 0 && value <= std::numeric_limits<int32_t>::max()) return Status::kSuccess;
  return fail(Status::kUnsupported, std::string(op) + ": " + what + " = " + std::to_string(value) +
                                        " exceeds the int32 range the kernels index with");
}

Status checked_mul(const char* op, const char* what, std::initializer_list<int64_t> factors, int64_t* out) {
  int64_t v = 1;
  for (int64_t f : factors)
    if (f < 0 || __builtin_mul_overflow(v, f, &v))
      return fail(Status::kUnsupported, std::string(op) + ": " + what + " overflows 64-bit integers");
  *out = v;
  return Status::kSuccess;
}

Status check_i32_offset(const char* op, const char* what, int64_t rows, int64_t row_stride, int64_t cols) {
  if (rows <= 0) return Status::kSuccess;
  int64_t last = 0;
  if (row_stride < 0 || cols < 0 || __builtin_mul_overflow(rows - 1, row_stride, &last) ||
      __builtin_add_overflow(last, cols, &last) || last > std::numeric_limits<int32_t>::max())
    return fail(Status::kUnsupported, std::string(op) + ": " + what + " (" + std::to_string(rows - 1) + " * " +
                                          std::to_string(row_stride) + " + " + std::to_string(cols) +
                                          ") exceeds the int32 range the kernels index with");
  return Status::kSuccess;
}

Region span_of(const char* name, const void* data, const int64_t* sizes, const int64_t* strides, int rank,
               DType dtype) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const Region empty{name, begin, begin};
  if (!data) return empty;  // absent optional tensor (its sizes may be unset)
  int64_t last = 0;
  for (int i = 0; i < rank; ++i) {
    if (sizes[i] <= 0 || strides[i] < 0) return empty;  // empty, or refused by check_view
    int64_t span = 0;
    if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &span) || __builtin_add_overflow(last, span, &last))
      return {name, begin, UINTPTR_MAX};
  }
  uintptr_t bytes = 0, end = 0;
  if (__builtin_mul_overflow(uintptr_t(last) + 1, uintptr_t(dtype_size(dtype)), &bytes) ||
      __builtin_add_overflow(begin, bytes, &end))
    end = UINTPTR_MAX;  // reaches the end of the address space
  return {name, begin, end};
}

Status check_no_self_overlap(const char* op, const char* name, const int64_t* sizes, const int64_t* strides, int rank) {
  // Sufficient condition (as for a dense tensor in any dimension order): with
  // the dimensions of size > 1 sorted by stride, each stride exceeds the
  // furthest offset the smaller ones reach.
  int order[8];
  int n = 0;
  for (int i = 0; i < rank && n < 8; ++i) {
    if (sizes[i] == 0) return Status::kSuccess;  // empty: nothing written
    if (sizes[i] > 1) order[n++] = i;
  }
  std::sort(order, order + n, [&](int a, int b) { return strides[a] < strides[b]; });
  int64_t reach = 0;  // largest offset reachable with the dimensions so far
  for (int k = 0; k < n; ++k) {
    const int i = order[k];
    int64_t span = 0;
    if (strides[i] <= reach)
      return fail(Status::kInvalidArgument,
                  std::string(op) + ": output " + name + " has elements that share memory (stride " +
                      std::to_string(strides[i]) + " in dim " + std::to_string(i) + " of size " +
                      std::to_string(sizes[i]) + "): every element must have its own address");
    if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &span) || __builtin_add_overflow(reach, span, &reach))
      return Status::kSuccess;  // too large to overlap itself; check_view refuses such views
  }
  return Status::kSuccess;
}

Status check_no_overlap(const char* op, std::initializer_list<Region> outputs, std::initializer_list<Region> inputs) {
  auto overlap = [](const Region& a, const Region& b) {
    return a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end;
  };
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    for (auto p = o + 1; p != outputs.end(); ++p)
      if (overlap(*o, *p))
        return fail(Status::kInvalidArgument, std::string(op) + ": outputs " + o->name + " and " + p->name +
                                                  " overlap in memory: pass distinct buffers");
    for (const Region& i : inputs)
      if (overlap(*o, i))
        return fail(Status::kInvalidArgument, std::string(op) + ": output " + o->name + " overlaps input " + i.name +
                                                  " in memory (not supported in place): pass distinct buffers");
  }
  return Status::kSuccess;
}

Status check_same_dim(const char* op, const char* a, int64_t a_size, int ai, const char* b, int64_t b_size, int bi) {
  if (a_size == b_size) return Status::kSuccess;
  return fail(Status::kInvalidArgument, std::string(op) + ": " + a + ".size(" + std::to_string(ai) + ") = " +
                                            std::to_string(a_size) + " but " + b + ".size(" + std::to_string(bi) +
                                            ") = " + std::to_string(b_size));
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
