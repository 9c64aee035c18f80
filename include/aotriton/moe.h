// Mixture-of-experts operators.
#pragma once
#include <cstddef>

#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

// kSwigluOai: gpt-oss's clamped SwiGLU on interleaved columns (gate 2n, up
// 2n + 1): g = min(gate, 7), u = clamp(up, -7, 7), g * sigmoid(1.702 g) * (u + 1).
enum class Activation : int32_t { kSilu = 0, kGelu = 1, kGeluTanh = 2, kSwigluOai = 3 };

// out[m, n] = act(input[m, n]) * input[m, N + n]; input is [M, 2N], out [M, N]
// (kSwigluOai: act of the interleaved pair input[m, 2n], input[m, 2n + 1]).
// fp16, bf16 or fp32 (both the same); rows may be strided, columns contiguous.
struct ActAndMulParams {
  TensorView<2> out;
  TensorView<2> input;
  Activation activation = Activation::kSilu;
};
AOTRITON_API Status act_and_mul(const ActAndMulParams& params, Stream stream,
                                const KernelOptions* options = nullptr) noexcept;
AOTRITON_API Status silu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept;
AOTRITON_API Status gelu_and_mul(TensorView<2> out, TensorView<2> input, Stream stream) noexcept;

// out[m, h] = sum_k input[m, k, h]; input [M, topk, H], out [M, H].
struct MoeSumParams {
  TensorView<2> out;
  TensorView<3> input;
};
AOTRITON_API Status moe_sum(const MoeSumParams& params, Stream stream,
                            const KernelOptions* options = nullptr) noexcept;

// ---------------------------------------------------------------------------
// Fused MoE (the vLLM design): routing, alignment, grouped GEMM, fp8 quant,
// and fused_experts composing them. Every call is asynchronous on `stream`,
// allocates nothing and synchronises nothing (CUDA-graph capturable); device
// buffers a call needs beyond its outputs come from a caller `workspace`
// sized by the matching *_workspace_size query. Integer tensors are int32.
// Sizes and strides must fit int32 (checked).
// ---------------------------------------------------------------------------

// Weight/activation quantization of the grouped GEMM.
enum class QuantMode : int32_t {
  kNone = 0,          // A, B fp16 or bf16 (same dtype as C)
  kFp8PerTensor = 1,  // fp8 e4m3 A and B; one A scale, one B scale per expert (or one)
  kFp8Block = 2,      // fp8 e4m3; A scales per (row, 128 columns), B per 128x128 block
  // fp8 e4m3 w8a8 with one A scale per row (fused_experts: dynamic, per token)
  // and one B scale per output channel (FP8-dynamic checkpoints).
  kFp8PerChannel = 3,
  // Weight-only: A and C fp16/bf16, B integer with fp32 per-channel scales.
  kInt8W8A16 = 4,  // B int8 [E, N, K], W = q * scale[e, n]
  // B int4 packed two per byte along K: uint8 [E, N, K / 2], byte j of row n
  // holds k = 2j in its low nibble and k = 2j + 1 in its high nibble (values
  // 0..15). Scales fp32 [E, N, K / group_size]; zero points (optional) uint4
  // packed two per byte along N: uint8 [E, cdiv(N, 2), K / group_size], low
  // nibble = even n; absent = 8. W[n, k] = (q[n, k] - zp[n, k / g]) * scale[n, k / g].
  // group_size: a multiple of 64 (64, 128, ...) dividing K; K even.
  kInt4W4A16 = 5,
};
// The quantization modes added for issue 13 (kFp8PerChannel, kInt8W8A16,
// kInt4W4A16) are compiled for aligned shapes only: K, N, row strides and
// pointers multiples of 16 (others return kUnsupported). The weight-only modes
// run with block_size 16 or 64 (fused_experts caps moe_gemm_block_size at 64),
// kFp8PerChannel with 16, 64 or 128.

// Router: softmax over experts, then the top-k (ties: lower expert id first).
// logits [M, E] fp16/bf16/fp32 (any strides), E <= 512; topk_weights [M, topk]
// fp32 and topk_ids [M, topk] int32 outputs (columns contiguous), topk <= E.
// renormalize divides the k weights by their sum.
// Non-finite logits still give every entry a defined value (ids in [0, E),
// finite weights): NaN counts as -inf; +inf logits share the probability
// equally (the others get 0); a row with no logit above -inf is uniform.
struct TopkSoftmaxParams {
  TensorView<2> logits;
  TensorView<2> topk_weights;
  TensorView<2> topk_ids;
  bool renormalize = false;
};
AOTRITON_API Status topk_softmax(const TopkSoftmaxParams& params, Stream stream,
                                 const KernelOptions* options = nullptr) noexcept;

// Groups the token slots by expert and pads each expert to block_size.
// topk_ids: [M, topk] int32, contiguous (numel = M * topk slots; any 2-D
//   contiguous view of the flat ids works). With expert_map (int32 [E_global],
//   contiguous, E_global >= num_experts; global id -> local id or -1) ids are
//   global and mapped; slots whose global id is outside [0, E_global) or whose
//   local id is -1 or outside [0, num_experts) are skipped.
// num_experts: local experts, 1..512. block_size: 16, 32, 64 or 128 (the
//   grouped GEMM's BLOCK_SIZE_M: use moe_gemm_block_size()).
// Outputs (int32, 1-D, contiguous):
//   sorted_token_ids [>= moe_align_max_padded(numel, num_experts, block_size)]
//     slot indices grouped by expert, padded with the sentinel numel;
//   expert_ids [>= cdiv(that, block_size)]: expert of each block, -1 past the end;
//   num_tokens_post_padded [1].
// Uses one launch when numel <= 1024, else four (those need the workspace).
struct MoeAlignParams {
  TensorView<2> topk_ids;
  int32_t num_experts = 0;
  int32_t block_size = 0;
  TensorView<1> expert_map;  // optional: data == nullptr for none
  TensorView<1> sorted_token_ids;
  TensorView<1> expert_ids;
  TensorView<1> num_tokens_post_padded;
  void* workspace = nullptr;  // device memory, 16-byte aligned
  size_t workspace_bytes = 0;
};
// Raw integers, no overflow: max_padded is 0 for negative arguments and saturates
// at INT64_MAX; the workspace size is 0 for sizes no moe_align_block_size call
// accepts (negative or past int32).
AOTRITON_API int64_t moe_align_max_padded(int64_t numel, int64_t num_experts, int64_t block_size) noexcept;
AOTRITON_API size_t moe_align_workspace_size(int64_t numel, int64_t num_experts) noexcept;
// options (force_config / ran_config) apply to the launch that writes the
// outputs: moe_align_small (numel <= 1024), else moe_align_scatter.
AOTRITON_API Status moe_align_block_size(const MoeAlignParams& params, Stream stream,
                                         const KernelOptions* options = nullptr) noexcept;

// The block size (= GEMM BLOCK_SIZE_M) the library uses for num_tokens tokens;
// `aligned`: hidden size and intermediate size are multiples of 16.
AOTRITON_API int32_t moe_gemm_block_size(int64_t num_tokens, bool aligned = true) noexcept;
// The block size fused_experts uses (block_size 0): as above, and 128 where the
// experts average >= 128 slots (cdiv(num_tokens * topk, num_experts)).
AOTRITON_API int32_t moe_gemm_block_size(int64_t num_tokens, int64_t topk, int64_t num_experts,
                                         bool aligned = true) noexcept;

// vLLM's invoke_fused_moe_kernel: for every slot s listed in sorted_token_ids,
//   c[s, :] = a[s / top_k, :] @ b[expert(s)]^T  (* topk_weights[s])
// a [rows, K], b [E, N, K] (last dims contiguous), c [num_slots, N] with
// num_slots <= rows * top_k; fp16/bf16 (all the same) or, quantized, a and b
// fp8 e4m3 and c fp16/bf16. sorted_token_ids / expert_ids /
// num_tokens_post_padded come from moe_align_block_size with the same
// block_size and num_experts = E. Unlisted rows of c are not written.
// Index inputs are user data and are masked, never trusted: a block whose
// expert id is outside [0, E) (-1 included) writes zeros to its listed rows;
// slot ids < 0 or >= c.size(0) are neither read nor written.
// Scales (fp32): kFp8PerTensor: a_scale numel 1, b_scale numel 1 or E
//   (contiguous, any shape); kFp8Block: a_scale [rows, cdiv(K, 128)],
//   b_scale [E, cdiv(N, 128), cdiv(K, 128)] (any strides); kFp8PerChannel:
//   a_scale [rows, 1], b_scale [E, N, 1]; kInt8W8A16: b int8 [E, N, K],
//   b_scale [E, N, 1], a_scale absent; kInt4W4A16: b uint8 [E, N, K / 2]
//   (K = a.size(1)), b_scale [E, N, K / group_size], optional b_zp uint8
//   [E, cdiv(N, 2), K / group_size] (layouts at QuantMode; any strides).
// topk_weights: fp32, contiguous, numel num_slots (when mul_routed_weight).
// K, N, row strides and pointers 16-aligned select the fast (ALIGNED) kernels.
struct GroupedGemmParams {
  TensorView<2> a;
  TensorView<3> b;
  TensorView<2> c;
  TensorView<2> a_scale;
  TensorView<3> b_scale;
  TensorView<2> topk_weights;
  TensorView<1> sorted_token_ids;
  TensorView<1> expert_ids;
  TensorView<1> num_tokens_post_padded;
  int32_t top_k = 1;
  int32_t block_size = 0;
  bool mul_routed_weight = false;
  QuantMode quant = QuantMode::kNone;
  TensorView<3> b_zp;      // kInt4W4A16 only, optional (data == nullptr: 8)
  int32_t group_size = 0;  // kInt4W4A16 only
};
AOTRITON_API Status grouped_gemm(const GroupedGemmParams& params, Stream stream,
                                 const KernelOptions* options = nullptr) noexcept;

// q = fp8(x / s) with s = max(max|group|, 1e-10) / 448 per row and group of
// group_size (128) columns. x [M, K] fp16/bf16/fp32, q [M, K] fp8 e4m3 (last
// dims contiguous), scales [M, cdiv(K, group_size)] fp32 out. sm_89+.
struct PerTokenGroupQuantParams {
  TensorView<2> x;
  TensorView<2> q;
  TensorView<2> scales;
  int32_t group_size = 128;
};
// options (force_config / ran_config) apply to the quantizing kernel.
AOTRITON_API Status per_token_group_quant_fp8(const PerTokenGroupQuantParams& params, Stream stream,
                                              const KernelOptions* options = nullptr) noexcept;

// q = fp8(clamp(x / scale)); scale fp32 [1] on the device. With
// dynamic_scale the call first writes scale = max(max|x|, 1e-10) / 448 (two
// small launches using the workspace). sm_89+.
// Dynamic per-token fp8: scales[m] = max(max_k |x[m, k]|, 1e-10) / 448,
// q[m, :] = fp8(x[m, :] / scales[m]). x [M, K] fp16/bf16 and q [M, K] fp8
// e4m3 (K, row strides and pointers multiples of 16), scales fp32 [M, 1]
// contiguous. sm_89+.
struct PerTokenQuantParams {
  TensorView<2> x;
  TensorView<2> q;
  TensorView<2> scales;
};
AOTRITON_API Status per_token_quant_fp8(const PerTokenQuantParams& params, Stream stream,
                                        const KernelOptions* options = nullptr) noexcept;

struct PerTensorQuantParams {
  TensorView<2> x;
  TensorView<2> q;
  TensorView<1> scale;
  bool dynamic_scale = false;
  void* workspace = nullptr;  // dynamic_scale only
  size_t workspace_bytes = 0;
};
AOTRITON_API size_t per_tensor_quant_workspace_size(int64_t rows) noexcept;
// options (force_config / ran_config) apply to the quantizing kernel, not to
// the dynamic-scale launches.
AOTRITON_API Status per_tensor_quant_fp8(const PerTensorQuantParams& params, Stream stream,
                                         const KernelOptions* options = nullptr) noexcept;

// out[m] = sum_k topk_weights[m, k] * act_and_mul(x[m] @ w1[e]^T) @ w2[e]^T, e = topk_ids[m, k]
// (kSwigluOai: w1's 2N rows interleave gate and up rows, see Activation):
// align -> (quant) -> GEMM1 -> act_and_mul -> (quant) -> GEMM2 * weights -> moe_sum.
// hidden_states [M, K] fp16/bf16; w1 [E, 2N, K] (gate rows, then up rows);
// w2 [E, K, N]; same dtype as hidden_states, or fp8 e4m3 with quant != kNone;
// topk_weights [M, topk] fp32 and topk_ids [M, topk] int32, contiguous;
// output [M, K] (hidden_states' dtype, last dim contiguous).
// expert_map (optional, int32 [E_global], contiguous, E_global >= E): ids are
// global, mapped to the E local experts; an id outside [0, E_global), -1, or
// an id outside [0, E) after mapping contributes 0.
// Without it ids must be in [0, E) (out-of-range ids also contribute 0).
// Scales (fp32): kFp8PerTensor: w1_scale / w2_scale numel 1 or E; a1_scale /
// a2_scale numel 1, or absent for a dynamic scale computed on the device.
// kFp8Block: block_n = block_k = 128; w1_scale [E, cdiv(2N,128), cdiv(K,128)],
// w2_scale [E, cdiv(K,128), cdiv(N,128)]; activations are quantized per token
// group (a1_scale / a2_scale must be absent).
// kFp8PerChannel: w1_scale [E, 2N, 1], w2_scale [E, K, 1]; activations are
// quantized per token with dynamic scales (a1_scale / a2_scale absent).
// kInt8W8A16: w1 int8 [E, 2N, K], w2 int8 [E, K, N], scales as kFp8PerChannel.
// kInt4W4A16: w1 uint8 [E, 2N, K / 2], w2 uint8 [E, K, N / 2] (packed as
// QuantMode says), w1_scale [E, 2N, K / g], w2_scale [E, K, N / g], optional
// w1_zp [E, N, K / g] and w2_zp [E, cdiv(K, 2), N / g] (uint8, both or
// neither), g = group_size (a multiple of 64 dividing K and N).
// block_size: 0 picks moe_gemm_block_size(M, topk, E, ...) (E: expert_map's
// length when given); else 16/32/64/128.
// workspace: device memory of fused_experts_workspace_size() bytes, 16-byte aligned.
// options (force_config / ran_config) apply to the two GEMM launches.
struct FusedExpertsParams {
  TensorView<2> hidden_states;
  TensorView<3> w1;
  TensorView<3> w2;
  TensorView<2> topk_weights;
  TensorView<2> topk_ids;
  TensorView<2> output;
  Activation activation = Activation::kSilu;
  QuantMode quant = QuantMode::kNone;
  TensorView<3> w1_scale;
  TensorView<3> w2_scale;
  TensorView<1> a1_scale;
  TensorView<1> a2_scale;
  int32_t block_n = 128;
  int32_t block_k = 128;
  TensorView<1> expert_map;
  int32_t block_size = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Llama 4: the router weight scales the token's input row (GEMM1) instead of
  // the expert output (GEMM2). Needs top-k = 1.
  bool apply_router_weight_on_input = false;
  TensorView<3> w1_zp;     // kInt4W4A16 zero points (optional)
  TensorView<3> w2_zp;
  int32_t group_size = 0;  // kInt4W4A16
};
// Checks params (except workspace) and returns the bytes fused_experts needs.
AOTRITON_API Status fused_experts_workspace_size(const FusedExpertsParams& params, size_t* bytes) noexcept;
AOTRITON_API Status fused_experts(const FusedExpertsParams& params, Stream stream,
                                  const KernelOptions* options = nullptr) noexcept;

// ---------------------------------------------------------------------------
// Grouped top-k router (DeepSeek-V2/V3; vLLM's grouped_topk), one launch.
// score = softmax(logits) or sigmoid(logits) (scoring); selection = score +
// e_score_correction_bias (when given). The E experts form num_expert_group
// equal groups; a group's score is its best selection, or with a bias the
// sum of its two best (DeepSeek-V3). The topk_group best groups are kept and
// the topk best experts inside them are chosen by selection, in descending
// order. Weights are the uncorrected scores of the chosen experts, divided by
// their sum when renormalize (a zero sum leaves them), times
// routed_scaling_factor. num_expert_group = topk_group = 1: plain softmax or
// sigmoid top-k. Ties: lower expert id first.
// logits [M, E] fp16/bf16/fp32 (any strides), 1 <= E <= 512;
// e_score_correction_bias fp32 [E] (any stride; data == nullptr: none; needs
// E / num_expert_group >= 2 unless every group is kept); topk_weights fp32
// and topk_ids int32 [M, topk] outputs (columns contiguous).
// Errors: num_expert_group not dividing E, topk_group outside
// [1, num_expert_group], topk outside [1, topk_group * E / num_expert_group].
// ---------------------------------------------------------------------------
enum class Scoring : int32_t { kSoftmax = 0, kSigmoid = 1 };

struct GroupedTopkParams {
  TensorView<2> logits;
  TensorView<1> e_score_correction_bias;  // optional
  TensorView<2> topk_weights;
  TensorView<2> topk_ids;
  int32_t num_expert_group = 1;
  int32_t topk_group = 1;
  Scoring scoring = Scoring::kSoftmax;
  bool renormalize = false;
  float routed_scaling_factor = 1.0f;
};
AOTRITON_API Status grouped_topk(const GroupedTopkParams& params, Stream stream,
                                 const KernelOptions* options = nullptr) noexcept;

// ---------------------------------------------------------------------------
// Expert-parallel dispatch/combine indices (run the local experts only).
// topk_ids [M, topk] int32, contiguous: global expert ids when expert_map
// (int32 [E_global], contiguous; global -> local id or -1) is given, else
// local ids. A slot s = m * topk + k is local when its id maps into
// [0, num_local_experts) (1..512); ids outside the map are not local.
// Outputs (int32, contiguous):
//   sorted_token_ids [M * topk]: the token m of each local slot, grouped by
//     local expert (ascending slot inside an expert), -1 past the total;
//   inverse [M, topk]: position of slot (m, k) in that order, -1 if not local;
//   expert_offsets [num_local_experts + 1]: expert e owns positions
//     [expert_offsets[e], expert_offsets[e + 1]); the last entry is the total.
// Dispatch: x_local = x[sorted_token_ids[:total]]; combine:
//   out[m] = sum over k with inverse[m, k] >= 0 of w[m, k] * y[inverse[m, k]].
// Deterministic; workspace: ep_dispatch_workspace_size() bytes, 16-byte aligned.
// ---------------------------------------------------------------------------
struct EpDispatchParams {
  TensorView<2> topk_ids;
  TensorView<1> expert_map;  // optional
  int32_t num_local_experts = 0;
  TensorView<1> sorted_token_ids;
  TensorView<2> inverse;
  TensorView<1> expert_offsets;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};
// 0 for arguments no ep_dispatch call accepts (negative or past int32).
AOTRITON_API size_t ep_dispatch_workspace_size(int64_t numel, int64_t num_local_experts) noexcept;
// options (force_config / ran_config) apply to the index kernel (ep_dispatch_indices).
AOTRITON_API Status ep_dispatch(const EpDispatchParams& params, Stream stream,
                                const KernelOptions* options = nullptr) noexcept;
// Backward of fused_experts (fp16/bf16, no expert map, no fp8): the gradients of
// hidden_states, w1, w2 and topk_weights for grad_output. Recomputes GEMM1 and
// act_and_mul; deterministic (no atomics: bit-identical results run to run).
// Slots whose id is outside [0, E) get zero gradients. Outputs are written whole
// (grad_w1 / grad_w2 of an expert without tokens are zeros). Workspace from the
// caller, fused_experts_backward_workspace_size bytes; no allocation, no sync.
struct FusedExpertsBackwardParams {
  TensorView<2> grad_output;         // [M, K]
  TensorView<2> hidden_states;       // [M, K]
  TensorView<3> w1;                  // [E, 2N, K]
  TensorView<3> w2;                  // [E, K, N]
  TensorView<2> topk_weights;        // fp32 [M, topk], contiguous
  TensorView<2> topk_ids;            // int32 [M, topk], contiguous
  Activation activation = Activation::kSilu;
  TensorView<2> grad_hidden_states;  // [M, K]
  TensorView<3> grad_w1;             // [E, 2N, K]
  TensorView<3> grad_w2;             // [E, K, N]
  TensorView<2> grad_topk_weights;   // fp32 [M, topk], contiguous
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};
AOTRITON_API Status fused_experts_backward_workspace_size(const FusedExpertsBackwardParams& params,
                                                          size_t* bytes) noexcept;
AOTRITON_API Status fused_experts_backward(const FusedExpertsBackwardParams& params, Stream stream,
                                           const KernelOptions* options = nullptr) noexcept;

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
