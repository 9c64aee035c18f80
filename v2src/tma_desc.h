// Host-side TMA descriptors for kernels whose rule declares TmaArg arguments
// (python/kernel_rules.py): the operator fills a TmaTensor, the generated
// launcher encodes it with the box and swizzle the generator computed for the
// chosen config (TmaBox) and passes the CUtensorMap by value, as Triton lays
// a `tensordesc` parameter out: the map, then shape (i32) and strides (i64).
#pragma once
#include <cuda.h>

#include <cstdint>

#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

struct CudaDriver;

constexpr int kMaxTmaRank = 5;

// A tensor as a TMA argument: dimensions outermost first, strides in
// elements; the last dimension must be contiguous (stride 1).
struct TmaTensor {
  const void* ptr = nullptr;
  int64_t shape[kMaxTmaRank] = {};
  int64_t strides[kMaxTmaRank] = {};
};

// One TmaArg's encoding for one compiled config, generated from the rule
// (kernel_rules.TmaArg.encoding; compile_kernel.py checks the compiled
// kernel's descriptor metadata against the same values): the box, outermost
// first, its inner dimension already cut to the swizzle width, and the
// shared-memory swizzle of Triton's default NVMMA layout for the block.
struct TmaBox {
  int32_t box[kMaxTmaRank];
  CUtensorMapSwizzle swizzle;
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
Status encode_tma(const CudaDriver& cu, const TmaTensor& t, DType dtype, int rank, const TmaBox& box,
                  const char* kernel, const char* arg, TmaParams* out);

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
