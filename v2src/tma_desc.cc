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

Status encode_tma(const CudaDriver& cu, const TmaTensor& t, DType dtype, int rank, const TmaBox& box,
                  const char* kernel, const char* arg, TmaParams* out) {
  const std::string who = std::string(kernel) + ": " + arg;
  if (!tma_compatible(t, dtype, rank))
    return fail(Status::kInvalidArgument, who + " cannot be a TMA operand (needs a 16-byte aligned base, 16-byte "
                                                "multiple strides, a contiguous last dimension, fp16/bf16/fp32/8-bit)");
  if (!cu.cuTensorMapEncodeTiled)
    return fail(Status::kNoDriver, who + ": the CUDA driver lacks cuTensorMapEncodeTiled");
  CUtensorMapDataType type{};
  cu_element_type(dtype, &type);
  const int elem = dtype_size(dtype);
  // CUDA orders dimensions innermost first; strides (bytes) of dims 1.. only.
  // A dimension of extent 1 is never stepped over: any valid stride serves.
  cuuint64_t dims[kMaxTmaRank], strides[kMaxTmaRank];
  cuuint32_t box_dims[kMaxTmaRank], element_strides[kMaxTmaRank];
  for (int i = 0; i < rank; ++i) {
    const int d = rank - 1 - i;
    dims[i] = static_cast<cuuint64_t>(t.shape[d]);
    if (box.box[d] < 1 || box.box[d] > 256)
      return fail(Status::kInvalidArgument, who + ": TMA box dimension " + std::to_string(box.box[d]) + " outside 1..256");
    box_dims[i] = static_cast<cuuint32_t>(box.box[d]);
    element_strides[i] = 1;
    if (i > 0) strides[i - 1] = static_cast<cuuint64_t>(t.shape[d] > 1 ? t.strides[d] * elem : 16);
  }
  CUresult r = cu.cuTensorMapEncodeTiled(&out->map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(t.ptr),
                                         dims, strides, box_dims, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                         box.swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                         CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
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
