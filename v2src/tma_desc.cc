#include "tma_desc.h"

#include <string>

#include "cuda_driver.h"
#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

namespace {

bool cu_element_type(DType d, CUtensorMapDataType* out) {
  switch (d) {
    case DType::kFloat16: *out = CU_TENSOR_MAP_DATA_TYPE_FLOAT16; return true;
    case DType::kBFloat16: *out = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; return true;
    case DType::kFloat32: *out = CU_TENSOR_MAP_DATA_TYPE_FLOAT32; return true;
    case DType::kFloat8E4M3:
    case DType::kInt8:
    case DType::kUInt8: *out = CU_TENSOR_MAP_DATA_TYPE_UINT8; return true;
    default: return false;
  }
}

// Triton's default NVMMA swizzle (NVMMASharedLayout.get_default_for; the
// Python twin is TmaArg.swizzle_bytes): the widest that divides the row, none
// for fewer than 8 rows.
int swizzle_bytes(const int64_t* block, int rank, int elem) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < rank; ++i) rows *= block[i];
  const int64_t contig = block[rank - 1] * elem;
  if (rows < 8) return 0;
  for (int w : {128, 64, 32})
    if (contig >= w && contig % w == 0) return w;
  return 0;
}

constexpr int64_t kMaxStrideBytes = int64_t{1} << 40;

}  // namespace

bool tma_compatible(const TmaTensor& t, DType dtype, int rank) noexcept {
  CUtensorMapDataType type;
  if (!cu_element_type(dtype, &type) || rank < 1 || rank > kMaxTmaRank || !t.ptr) return false;
  const int64_t elem = dtype_size(dtype);
  if (reinterpret_cast<uintptr_t>(t.ptr) % 16 != 0 || t.strides[rank - 1] != 1) return false;
  for (int i = 0; i < rank; ++i) {
    if (t.shape[i] < 1 || t.shape[i] > INT32_MAX) return false;
    if (i + 1 < rank && t.shape[i] > 1 &&
        (t.strides[i] <= 0 || (t.strides[i] * elem) % 16 != 0 || t.strides[i] * elem >= kMaxStrideBytes))
      return false;
  }
  return true;
}

Status encode_tma(const CudaDriver& cu, const TmaTensor& t, DType dtype, int rank, const int64_t* block,
                  const char* kernel, const char* arg, TmaParams* out) {
  const std::string who = std::string(kernel) + ": " + arg;
  if (!tma_compatible(t, dtype, rank))
    return fail(Status::kInvalidArgument, who + " cannot be a TMA operand (needs a 16-byte aligned base, 16-byte "
                                                "multiple strides, a contiguous last dimension, fp16/bf16/fp32/8-bit)");
  if (!cu.cuTensorMapEncodeTiled)
    return fail(Status::kNoDriver, who + ": the CUDA driver lacks cuTensorMapEncodeTiled");
  CUtensorMapDataType type;
  cu_element_type(dtype, &type);
  const int elem = dtype_size(dtype);
  const int sw = swizzle_bytes(block, rank, elem);
  // CUDA orders dimensions innermost first; strides (bytes) of dims 1.. only.
  // A dimension of extent 1 is never stepped over: any valid stride serves.
  cuuint64_t dims[kMaxTmaRank], strides[kMaxTmaRank];
  cuuint32_t box[kMaxTmaRank], element_strides[kMaxTmaRank];
  for (int i = 0; i < rank; ++i) {
    const int d = rank - 1 - i;
    dims[i] = static_cast<cuuint64_t>(t.shape[d]);
    if (block[d] < 1 || block[d] > 256)
      return fail(Status::kInvalidArgument, who + ": TMA box dimension " + std::to_string(block[d]) + " outside 1..256");
    box[i] = static_cast<cuuint32_t>(block[d]);
    element_strides[i] = 1;
    if (i > 0) strides[i - 1] = static_cast<cuuint64_t>(t.shape[d] > 1 ? t.strides[d] * elem : 16);
  }
  if (sw && box[0] * elem > static_cast<cuuint32_t>(sw)) box[0] = static_cast<cuuint32_t>(sw / elem);
  const CUtensorMapSwizzle swizzle = sw == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                     : sw == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                     : sw == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                : CU_TENSOR_MAP_SWIZZLE_NONE;
  CUresult r = cu.cuTensorMapEncodeTiled(&out->map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(t.ptr),
                                         dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                         CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  AOTRITON_RETURN_IF_ERROR(check_cu(cu, r, ("cuTensorMapEncodeTiled for " + who).c_str()));
  for (int i = 0; i < rank; ++i) {
    out->shape[i] = static_cast<int32_t>(t.shape[i]);
    out->strides[i] = t.strides[i];
  }
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
