// Flash attention operators.
#pragma once
#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

enum class CausalType : int32_t {
  kNone = 0,
  kTopLeft = 1,      // query i sees keys j <= i
  kBottomRight = 2,  // query i sees keys j <= i + seqlen_k - seqlen_q (flash-attn's causal)
};

// Batched attention. Tensors are indexed (batch, seqlen, heads, head_dim) with
// any strides (so (B, S, H, D) and (B, H, S, D) storage both work); the last
// dim must be contiguous. num_heads_q must be a multiple of num_heads_k (GQA/MQA).
// head_dim up to 256; sizes that are not a power of two run padded.
struct FwdParams {
  TensorView<4> q;    // [B, Sq, Hq, D] fp16 / bf16 / fp32
  TensorView<4> k;    // [B, Sk, Hk, D]
  TensorView<4> v;    // [B, Sk, Hk, D]
  TensorView<4> out;  // [B, Sq, Hq, D], same dtype
  TensorView<3> lse;  // [B, Hq, Sq] fp32: natural-log logsumexp of the scaled scores (-inf: row sees no key)
  float softmax_scale = 0.f;  // usually 1/sqrt(D); must be > 0
  CausalType causal = CausalType::kNone;
  // Dropout on the attention probabilities; seed and offset are int64 device
  // scalars read by the kernel (CUDA-graph safe). Same seed/offset, same mask.
  float dropout_p = 0.f;
  const int64_t* philox_seed = nullptr;
  const int64_t* philox_offset = nullptr;
  // Debug: if data is set, receives the keep mask as int8 [B, Hq, Sq, Sk].
  TensorView<4> dropout_mask{};
};

// Variable-length batch: sequences packed along the token dim.
struct FwdVarlenParams {
  TensorView<3> q;    // [total_q, Hq, D]
  TensorView<3> k;    // [total_k, Hk, D]
  TensorView<3> v;    // [total_k, Hk, D]
  TensorView<3> out;  // [total_q, Hq, D]
  TensorView<2> lse;  // [Hq, total_q] fp32
  const int32_t* cu_seqlens_q = nullptr;  // device, [num_seqs + 1], starts at 0
  const int32_t* cu_seqlens_k = nullptr;  // device, [num_seqs + 1]
  int32_t num_seqs = 0;
  int32_t max_seqlen_q = 0;  // bounds of the per-sequence lengths (grid size)
  int32_t max_seqlen_k = 0;
  float softmax_scale = 0.f;
  CausalType causal = CausalType::kNone;
  float dropout_p = 0.f;
  const int64_t* philox_seed = nullptr;
  const int64_t* philox_offset = nullptr;
  TensorView<4> dropout_mask{};  // [num_seqs, Hq, max_seqlen_q, max_seqlen_k] int8
};

AOTRITON_API Status attn_fwd(const FwdParams& params, Stream stream, const KernelOptions* options = nullptr) noexcept;
AOTRITON_API Status attn_fwd_varlen(const FwdVarlenParams& params, Stream stream,
                                    const KernelOptions* options = nullptr) noexcept;

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
