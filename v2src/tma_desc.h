// Host-side TMA descriptors for kernels whose rule declares TmaArg arguments
// (python/kernel_rules.py): the operator fills a TmaTensor, the generated
// launcher encodes it (box from the rule, swizzle as Triton's default NVMMA
// layout picks it) and passes the CUtensorMap by value, as Triton lays a
// `tensordesc` parameter out: the map, then shape (i32) and strides (i64).
#pragma once
#include <cuda.h>

#include <cstdint>

#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

struct CudaDriver;

constexpr int kMaxTmaRank = 5;

// The smallest power of two >= x: TmaArg block expressions may use it
// (python/kernel_rules.py pow2ceil, the same function).
constexpr int64_t pow2ceil(int64_t x) {
  int64_t p = 1;
  while (p < x) p *= 2;
  return p;
}

// A tensor as a TMA argument: dimensions outermost first, strides in
// elements; the last dimension must be contiguous (stride 1).
struct TmaTensor {
  const void* ptr = nullptr;
  int64_t shape[kMaxTmaRank] = {};
  int64_t strides[kMaxTmaRank] = {};
};

struct TmaParams {
  CUtensorMap map;  // 64-byte aligned by its declaration in cuda.h
  int32_t shape[kMaxTmaRank];
  int64_t strides[kMaxTmaRank];
};

// Whether `t` (rank dims, element type `dtype`) can be a TMA operand: a
// 16-byte aligned base, 16-byte multiple strides for every dimension of
// extent > 1, contiguous last dimension, extents in int32 range.
bool tma_compatible(const TmaTensor& t, DType dtype, int rank) noexcept;

// Fails with kInvalidArgument (naming kernel and argument) when `t` is not
// TMA-compatible, kNoDriver when the driver lacks cuTensorMapEncodeTiled.
Status encode_tma(const CudaDriver& cu, const TmaTensor& t, DType dtype, int rank, const int64_t* block,
                  const char* kernel, const char* arg, TmaParams* out);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
