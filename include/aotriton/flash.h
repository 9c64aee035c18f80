// Flash attention operators.
#pragma once
#include <cstddef>

#include "aotriton/runtime.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

enum class CausalType : int32_t {
  kNone = 0,
  kTopLeft = 1,      // query i sees keys j <= i
  kBottomRight = 2,  // query i sees keys j <= i + seqlen_k - seqlen_q (flash-attn's causal)
};

// Optional attention features (flash-attn 2's definitions), for the forward
// and backward alike (pass the same values to both). fp16/bf16 only, not with
// dropout; kUnsupported otherwise. softcap and ALiBi exclude each other.
struct Features {
  // Sliding window: query i sees key j iff
  //   i + d - window_left <= j <= i + d + window_right,
  // d = 0 with top-left causal, else seqlen_k - seqlen_q (per sequence);
  // -1 = unbounded on that side (other negative values: kInvalidArgument).
  // With causal, window_right is 0. Tiles outside the window are skipped.
  int32_t window_left = -1;
  int32_t window_right = -1;
  // > 0: each scaled score s becomes softcap * tanh(s / softcap); 0: off.
  float softcap = 0.f;
  // ALiBi: if data is set, fp32 [1 or B, Hq] (stride(1) == 1): the scaled
  // score of (b, h, i, j) gets -slope[b or 0, h] * |i + seqlen_k - seqlen_q - j|.
  TensorView<2> alibi_slopes{};
};

// Batched attention. Tensors are indexed (batch, seqlen, heads, head_dim) with
// any strides (so (B, S, H, D) and (B, H, S, D) storage both work); the last
// dim must be contiguous. num_heads_q must be a multiple of num_heads_k (GQA/MQA).
// head_dim up to 256; sizes that are not a power of two run padded.
// v (and out, dout, dv) may have another head dim Dv than q/k (DeepSeek MLA):
// Dv 128 with D 136..256 (a multiple of 8), or Dv 64 with D 128; fp16/bf16,
// without dropout or features. Other pairs: kUnsupported naming these.
struct FwdParams {
  TensorView<4> q;    // [B, Sq, Hq, D] fp16 / bf16 / fp32
  TensorView<4> k;    // [B, Sk, Hk, D]
  TensorView<4> v;    // [B, Sk, Hk, Dv], Dv = D unless a supported pair (above)
  TensorView<4> out;  // [B, Sq, Hq, Dv], same dtype
  TensorView<3> lse;  // [B, Hq, Sq] fp32: natural-log logsumexp of the scaled scores (-inf: row sees no key)
  float softmax_scale = 0.f;  // usually 1/sqrt(D); must be > 0
  CausalType causal = CausalType::kNone;
  Features features{};  // sliding window, softcap, ALiBi (off by default)
  // Dropout on the attention probabilities; seed and offset are int64 device
  // scalars read by the kernel (CUDA-graph safe). Same seed/offset, same mask.
  // Element (b, h, m, n) uses word 0 of Philox-4x32-10 with key = seed and
  // counter (n, m, (b * Hq + h) | hi32(offset) << 16, lo32(offset)): no two
  // elements or heads share a number at any length, and calls whose offsets
  // differ (below 2^48) get disjoint streams.
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
  TensorView<3> v;    // [total_k, Hk, Dv]
  TensorView<3> out;  // [total_q, Hq, Dv]
  TensorView<2> lse;  // [Hq, total_q] fp32
  // Sequence b is rows [cu[b], cu[b+1]) of the packed tensors. The values are
  // device data and are never trusted: the kernels clamp each start into
  // [0, total], each end into [start, total] (a decreasing pair is an empty
  // sequence) and each length to max_seqlen (the first max_seqlen rows are
  // used). Rows outside every sequence are neither read nor written (their
  // out / lse keep what the caller put there), like padding after cu[num_seqs].
  const int32_t* cu_seqlens_q = nullptr;  // device, [num_seqs + 1], starts at 0
  const int32_t* cu_seqlens_k = nullptr;  // device, [num_seqs + 1]
  int32_t num_seqs = 0;
  int32_t max_seqlen_q = 0;  // bounds of the per-sequence lengths (grid size)
  int32_t max_seqlen_k = 0;
  float softmax_scale = 0.f;
  CausalType causal = CausalType::kNone;
  Features features{};  // sliding window, softcap, ALiBi (off by default)
  float dropout_p = 0.f;
  const int64_t* philox_seed = nullptr;
  const int64_t* philox_offset = nullptr;
  TensorView<4> dropout_mask{};  // [num_seqs, Hq, max_seqlen_q, max_seqlen_k] int8
};

// Backward: dq, dk, dv from dout and the forward's q, k, v, out, lse (and the
// same dropout seed/offset). Three kernels: delta = rowsum(dout * out), then
// dK/dV (one program per key block and kv head, looping over that kv head's
// query heads) and dQ (one program per query block). No atomics, so the
// gradients are bit-identical run to run (deterministic), unless the caller
// passes dq_accum: then, on sm_90, where the Hopper kernel serves the call
// (fp16/bf16, head dim 64 or 128, no dropout or attention feature, 16-byte
// aligned strides), dQ is summed into it with fp32 atomics by the dK/dV kernel
// (faster; dq's last bits may differ run to run) and converted at the end.
struct BwdParams {
  TensorView<4> q, k, v, out, dout;  // as in FwdParams (dout like out)
  TensorView<3> lse;                 // the forward's [B, Hq, Sq]
  TensorView<4> dq;                  // [B, Sq, Hq, D], q's dtype
  TensorView<4> dk, dv;              // like k and v ([B, Sk, Hk, D] and [B, Sk, Hk, Dv])
  TensorView<3> delta;               // workspace [B, Hq, Sq] fp32 (written here)
  float softmax_scale = 0.f;
  CausalType causal = CausalType::kNone;
  Features features{};  // sliding window, softcap, ALiBi (off by default)
  float dropout_p = 0.f;
  const int64_t* philox_seed = nullptr;
  const int64_t* philox_offset = nullptr;
  // Optional workspace, q's shape [B, Sq, Hq, D] in fp32, strides multiples
  // of 16 elements (a contiguous tensor): opts into the atomic dQ path above;
  // ignored where that path does not serve the call. Empty: deterministic.
  // (Last, so designated initializers written before it stay valid.)
  TensorView<4> dq_accum{};
};

struct BwdVarlenParams {
  TensorView<3> q, k, v, out, dout;  // packed, as in FwdVarlenParams
  TensorView<2> lse;                 // [Hq, total_q]
  TensorView<3> dq, dk, dv;
  TensorView<2> delta;               // workspace [Hq, total_q] fp32
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;
  int32_t num_seqs = 0;
  int32_t max_seqlen_q = 0;
  int32_t max_seqlen_k = 0;
  float softmax_scale = 0.f;
  CausalType causal = CausalType::kNone;
  Features features{};  // sliding window, softcap, ALiBi (off by default)
  float dropout_p = 0.f;
  const int64_t* philox_seed = nullptr;
  const int64_t* philox_offset = nullptr;
};

AOTRITON_API Status attn_fwd(const FwdParams& params, Stream stream, const KernelOptions* options = nullptr) noexcept;
AOTRITON_API Status attn_fwd_varlen(const FwdVarlenParams& params, Stream stream,
                                    const KernelOptions* options = nullptr) noexcept;
// options->force_config applies to the Triton dK/dV and dQ kernels, or, when
// it names a config of the sm_90 dK/dV kernel (bwd_dkdv_hopper), to that one
// (an error if it cannot serve the call); options->ran_config names the
// config of the last kernel it applied to.
AOTRITON_API Status attn_bwd(const BwdParams& params, Stream stream, const KernelOptions* options = nullptr) noexcept;
AOTRITON_API Status attn_bwd_varlen(const BwdVarlenParams& params, Stream stream,
                                    const KernelOptions* options = nullptr) noexcept;

// ---------------------------------------------------------------------------
// Attention over a KV cache (decode and speculative decode), in the convention
// of flash-attn's flash_attn_with_kvcache. Asynchronous on `stream`, allocates
// and synchronises nothing (CUDA-graph capturable): the split-KV partials live
// in a caller workspace of attn_decode_workspace_size() bytes.
//
// Cache: contiguous [B, capacity, Hk, D], or paged [num_blocks, page_size, Hk, D]
// with block_table int32 [B, max_blocks] (capacity = max_blocks * page_size,
// page_size a multiple of 16; a multiple of 64 runs the faster kernel that
// looks a page up once per key tile: 1.2-1.3x at B=8-64 on an H200, see
// docs/performance.md). k_cache and v_cache share shape and dtype.
// Sequence b attends to its first cache_seqlens[b] + Snew cache rows: when
// k_new/v_new ([B, Snew, Hk, D]) are given they are first written in place at
// rows [cache_seqlens[b], cache_seqlens[b] + Snew) of the caches.
// Device values are never trusted (no out-of-bounds access whatever they hold):
//   - cache_seqlens[b] is clamped into [0, capacity - Snew];
//   - a block_table entry outside [0, num_blocks) addresses nothing: its keys
//     are left out of the softmax and the append does not write them.
// q [B, Sq, Hq, D] (Sq >= 1: speculative decoding), Hq a multiple of Hk (all q
// heads of one kv head run in one program, so each KV tile is read once).
// fp16 or bf16; D a multiple of 8, at most 256; last dims contiguous. Offsets
// within one sequence of q, out, lse, k_new and v_new must fit int32; with an
// append, every element of the caches needs its own memory.
// causal: query i sees keys j <= i + seqlen_k - Sq (bottom-right, flash-attn).
// A row that sees no key (e.g. cache_seqlens 0 and no append) gets out = 0, lse = -inf.
struct DecodeParams {
  TensorView<4> q;
  TensorView<4> k_cache, v_cache;
  TensorView<4> k_new{}, v_new{};   // optional (data null: no append)
  TensorView<1> cache_seqlens;      // int32 [B], contiguous
  TensorView<2> block_table{};      // int32 [B, max_blocks], rows contiguous (data null: contiguous cache)
  TensorView<4> out;                // [B, Sq, Hq, D], q's dtype
  TensorView<3> lse;                // [B, Hq, Sq] fp32
  float softmax_scale = 0.f;        // > 0, finite
  bool causal = false;
  // Sliding window (flash-attn's, bottom-right aligned): query i sees keys j
  // with i + Sk - Sq - window_left <= j <= i + Sk - Sq + window_right, where Sk
  // = cache_seqlens[b] + Snew; -1 = unbounded (other negatives are refused);
  // causal caps window_right at 0. Key tiles outside the window are not read.
  int32_t window_left = -1, window_right = -1;
  // softcap > 0: the scaled scores s become softcap * tanh(s / softcap).
  float softcap = 0.f;
  // ALiBi (data set): fp32 [1, Hq] (one slope per head) or [B, Hq], rows
  // contiguous; scores get -slope * |i + Sk - Sq - j|. Not with softcap.
  TensorView<2> alibi_slopes{};
  // Split-KV (flash-decoding): 0 lets the operator choose from B * Hk and the
  // capacity against num_sms; >= 1 forces that many splits (at most 128).
  int32_t num_splits = 0;
  int32_t num_sms = 0;  // SMs of the device the call runs on (0: 132, an H200; < 0 is refused)
  void* workspace = nullptr;  // device memory, 16-byte aligned (only needed with > 1 split)
  size_t workspace_bytes = 0;
};
// Checks params (except the workspace) and returns the bytes attn_decode needs
// and, if num_splits is non-null, the number of splits it will run.
AOTRITON_API Status attn_decode_workspace_size(const DecodeParams& params, size_t* bytes,
                                               int32_t* num_splits = nullptr) noexcept;
// options->force_config applies to the attention kernel (attn_decode).
AOTRITON_API Status attn_decode(const DecodeParams& params, Stream stream,
                                const KernelOptions* options = nullptr) noexcept;

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
