// Internal launch helpers of the fused-MoE operators: raw pointers and sizes
// in, generated launchers out. The public entry points (moe_routing.cc,
// moe_gemm.cc, moe_fused.cc) validate TensorViews first; these only check what
// the kernels themselves need (int32 ranges, supported sizes).
#pragma once
#include <cstddef>
#include <cstdint>

#include "aotriton/moe.h"
#include "aotriton_tables.h"
#include "error.h"
#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {
namespace detail {
// One private namespace name: the runtime's helpers (aotriton::detail) answer
// `detail::` here too.
using namespace ::aotriton::detail;

// Generated from the Python tables (python/shared_constants.py).
using detail::tables::kAlignBlockT;
using detail::tables::kAlignSmallMax;
using detail::tables::kDynamicQuantChunk;
using detail::tables::kDynamicQuantMaxChunks;
using detail::tables::kMaxExperts;
using detail::tables::kScaleGroup;

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int32_t pow2_at_least(int64_t v, int32_t lo) {
  int32_t p = lo;
  while (p < v) p *= 2;
  return p;
}
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// A BLOCK_SIZE_M the grouped GEMM (and so the align) is compiled for.
inline bool is_gemm_block_size(int64_t b) {
  for (int32_t s : detail::tables::kMoeBlockSizes)
    if (b == s) return true;
  return false;
}

template <int R>
bool is_contiguous(const TensorView<R>& t) {
  int64_t expect = 1;
  for (int i = R - 1; i >= 0; --i) {
    if (t.size(i) != 1 && t.stride(i) != expect) return false;
    expect *= t.size(i);
  }
  return true;
}

// Hands out 256-byte aligned pieces of a workspace. With a null base it only
// counts, so the size query and the operator share one layout function.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* take(int64_t count) {
    size_t at = offset_;
    offset_ = (offset_ + static_cast<size_t>(count) * sizeof(T) + 255) / 256 * 256;
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
  }
  void* take_bytes(int64_t bytes) { return take<char>(bytes); }
  size_t size() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

Status check_workspace(const char* op, const void* workspace, size_t have, size_t need);

// moe_align_block_size on raw buffers (sizes as documented in moe.h).
struct AlignJob {
  const int32_t* topk_ids;
  const int32_t* expert_map;  // nullptr: none
  int64_t numel;
  int64_t num_experts;
  int32_t block_size;
  int32_t* sorted_token_ids;
  int32_t* expert_ids;
  int32_t* num_tokens_post_padded;
  void* workspace;  // moe_align_workspace_size(numel, num_experts) bytes
  int64_t expert_map_len;  // entries of expert_map (global ids at or past it are skipped)
  // force_config / ran_config: the kernel that writes the outputs
  // (moe_align_small for numel <= 1024, else moe_align_scatter).
  const KernelOptions* options = nullptr;
};
Status launch_align(const char* op, const AlignJob& job, Stream stream);

// An optional expert_map (data == nullptr: none): int32, contiguous, one
// entry per global expert, so at least num_experts (local) entries.
Status check_expert_map(const char* op, const TensorView<1>& map, int64_t num_experts);

// One grouped GEMM launch (fused_moe_kernel); strides in elements.
struct GemmJob {
  const void* a;
  const void* b;
  void* c;
  const float* a_scale;
  const float* b_scale;
  const float* topk_weights;
  const int32_t* sorted_token_ids;
  const int32_t* expert_ids;
  const int32_t* num_tokens_post_padded;
  int64_t N, K, EM, num_valid_tokens, top_k;
  // b's (local) experts: the tuning LUT is keyed on slots per expert, and
  // blocks with an expert id outside [0, E) write zeros.
  int64_t num_experts;
  int64_t stride_am, stride_be, stride_bn, stride_cm;
  int64_t stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk;
  DType ab_dtype, c_dtype;
  QuantMode quant;
  bool mul_routed_weight;
  int32_t block_size;
  // kInt4W4A16: zero points (nullptr: 8) with strides, and the K group size.
  const uint8_t* b_zp;
  int64_t stride_bze, stride_bzn, stride_bzk;
  int32_t group_size;
  // 0 or 1 unsplit; kGemmSplitK writes split s of slot r to c row r * kGemmSplitK + s
  // (c then has num_valid_tokens * kGemmSplitK rows). Aligned, block_size 16, routed weight.
  int32_t split_k;
  // a in the sm_90 int4 kernel's dot order (tritonsrc/moe/dot_order.py), K tiles of
  // wq_dot_order_k_tile's answer: that kernel must take the job (else kInternal).
  bool x_dot_order;
};
// The split-K factor of the GEMMs' SPLIT_K functionals (generated: configs.GEMM_SPLIT_K = WQ_SPLIT_K).
using detail::tables::kGemmSplitK;
Status launch_gemm(const char* op, const GemmJob& job, Stream stream, const KernelOptions* options);
// The K tile (64 or 128) of the sm_90 int4 kernel where it would take `job` with its activations
// in its dot order (X_DOT_ORDER; job.x_dot_order itself is ignored), else 0: the caller then passes
// them as they are. AOTRITON_MOE_WQ_DOT_ORDER=0 gives 0.
Status wq_dot_order_k_tile(const char* op, const GemmJob& job, Stream stream, const KernelOptions* options,
                           int32_t* k_tile);

// Quantization-mode helpers shared by grouped_gemm and fused_experts (moe_gemm.cc).
constexpr int32_t kInt4GroupMultiple = 64;  // the int4 kernel's BLOCK_SIZE_K (configs.WQ_GROUP_MULTIPLE)
// K even, group_size a positive multiple of 64 dividing K; `what` names K in messages.
Status check_int4_k(const char* op, const char* what, int64_t K, int32_t group_size);
// Optional uint8 [E, cdiv(N, 2), groups] zero points (data == nullptr passes).
Status check_zero_points(const char* op, const char* name, const TensorView<3>& zp, int64_t E, int64_t N,
                         int64_t groups);
// Per-channel scales [E, N, 1] / group scales [E, N, groups] (+ zero points) into a job.
void set_channel_scale(GemmJob* j, const TensorView<3>& s);
void set_group_scale(GemmJob* j, const TensorView<3>& s, const TensorView<3>& zp, int32_t group_size);

// fp8 quantization of x [M, K] into q [M, K] (row strides given, K contiguous).
struct QuantJob {
  const void* x;
  DType x_dtype;
  void* q;
  int64_t M, K, stride_xm, stride_qm;
};
// scales [M, cdiv(K, 128)] with strides (stride_sm, stride_sk).
// `options` (force_config / ran_config) go to the quantizing kernel.
Status launch_group_quant(const char* op, const QuantJob& job, float* scales, int64_t stride_sm,
                          int64_t stride_sk, Stream stream, const KernelOptions* options = nullptr);
Status launch_tensor_quant(const char* op, const QuantJob& job, const float* scale, Stream stream,
                           const KernelOptions* options = nullptr);
// Dynamic per-token scales (fp32 [M], contiguous); K, strides, x and q 16-aligned.
Status launch_token_quant(const char* op, const QuantJob& job, float* scales, Stream stream,
                          const KernelOptions* options = nullptr);
// scale[0] = max(max|x|, 1e-10) / 448; partials: dynamic_scale_partials(M) floats, at
// most kDynamicQuantMaxChunks (the buffer size both routes share).
int32_t dynamic_scale_partials(int64_t rows);
Status launch_dynamic_scale(const char* op, const QuantJob& job, float* partials, float* scale, Stream stream);
// Decode-sized, 16-byte aligned x (at most kDynamicQuantMaxChunks row chunks of
// kDynamicQuantChunk columns): scale and q in two launches of one chunk per program,
// the same bits as launch_dynamic_scale + launch_tensor_quant.
bool dynamic_quant_chunked(const QuantJob& job);
// The slots moe_align drops (topk_ids, through the expert map when it has entries).
struct SlotFilter {
  const int32_t* topk_ids;
  const int32_t* expert_map;
  int64_t expert_map_len;  // 0 without a map
  int64_t num_experts;
};
// activation >= 0 (silu 0, gelu_tanh 2): job.x is [M, 2K] = gate | up and the
// activation runs in both launches (the kernels' ACTIVATION); its rows are then
// fused_experts' slots, and `slots` names the dropped ones, whose rows GEMM1 never
// wrote and the scale must not see. partials: kDynamicQuantMaxChunks floats.
Status launch_dynamic_quant_chunks(const char* op, const QuantJob& job, float* partials, float* scale, Stream stream,
                                   int32_t activation = -1, const SlotFilter& slots = {});

// Zero buf[r, :] for every slot r (flat topk_ids index) that align drops.
Status launch_zero_dropped_rows(const char* op, void* buf, DType dtype, int64_t rows, int64_t cols,
                                int64_t stride_row, const int32_t* topk_ids, const int32_t* expert_map,
                                int64_t expert_map_len, int64_t num_experts, Stream stream);

}  // namespace detail
}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
