// What the flash forward and backward operators share: the attention
// geometry, strided tensor addressing in kernel terms, and their checks.
#pragma once
#include <cstdint>

#include "aotriton/flash.h"
#include "kernel_inputs.h"
#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {
// One private namespace name: the runtime's helpers (aotriton::detail) answer
// `detail::` here too.
using namespace ::aotriton::detail;

// A tensor as the kernels address it: element (seq b, head h, token m, d) at
// ptr + b*z + h*h_ + m*m_ + d. Varlen tensors have z = 0 (cu_seqlens gives the start).
struct Strided {
  const void* ptr = nullptr;
  int64_t z = 0, h = 0, m = 0;
};
inline Strided bshd(const TensorView<4>& t) { return {t.data, t.stride(0), t.stride(2), t.stride(1)}; }
inline Strided packed(const TensorView<3>& t) { return {t.data, 0, t.stride(1), t.stride(0)}; }
// A Strided as a kernel's Inputs field (the rules' dims "zhm" / "zhn").
inline detail::KernelTensor<3> kernel_tensor(const Strided& t) { return {t.ptr, {t.z, t.h, t.m}}; }

struct Geometry {
  bool varlen = false;
  DType dtype = DType::kFloat16;
  int64_t batch = 0, hq = 0, hk = 0, max_sq = 0, max_sk = 0, head_dim = 0;
  const int32_t* cu_q = nullptr;
  const int32_t* cu_k = nullptr;
  // Varlen: rows of the packed q and k tensors; the kernels clamp cu_seqlens
  // into [0, total] so no value can address a row outside them.
  int64_t total_q = 0, total_k = 0;
  int64_t head_dim_v = 0;  // of v, out, dout, dv: head_dim, or another (flash_vdim.h)
};

// The power-of-two head-dim bucket a head dim runs in (padded when smaller).
int32_t head_dim_bucket(int64_t d);

// The kernels' block loops step an int32 row / key index one block (up to
// 128 rows; this bound leaves 1024) past a sequence's end
// (`for start_n in range(lo, hi, BLOCK_N)`, `min(start_m + BLOCK_M, seqlen)`):
// max_seqlen_q and max_seqlen_k may not exceed it (check_geometry).
inline constexpr int64_t kMaxSeqlen = (int64_t{1} << 31) - 1024;

// Head dim, GQA ratio, scale, dropout and 32-bit index ranges of the kernels.
Status check_geometry(const char* op, const Geometry& g, float scale, float dropout_p, bool dropout,
                      const int64_t* seed, const int64_t* offset, CausalType causal);

// The band of sliding window / softcap / ALiBi (tritonsrc/flash/attn_mods.py)
// adds key and query offsets in int32 (last + hi_off + 1, last - lo_off + 1,
// up to max_seqlen_q + max_seqlen_k): call when the band kernel runs.
Status check_band(const char* op, const Geometry& g);

// The backward's dK/dV kernels (bwd_dkdv.py, bwd_hopper.py) loop over
// (num_heads_q / num_heads_k) * cdiv(seqlen_q, BLOCK_M) steps counted in
// int32; BLOCK_M is a tuning choice of at least 16.
Status check_dkdv_steps(const char* op, const Geometry& g);

struct StridedRows {
  const char* name;
  const Strided* t;
  int64_t rows;
};

// `rows` tokens of `t` stay inside the kernels' 32-bit in-sequence offsets.
Status check_strided(const char* op, const char* name, const Strided& t, int64_t rows, int64_t head_dim);

// Batched q/k/v shapes: [B,Sq,Hq,D], [B,Sk,Hk,D], [B,Sk,Hk,Dv], fp16/bf16/fp32, one dtype
// (Dv != D only where resolve_head_dim_v in flash_vdim.h accepts the pair).
Status check_batched_qkv(const char* op, const TensorView<4>& q, const TensorView<4>& k, const TensorView<4>& v);
Status check_packed_qkv(const char* op, const TensorView<3>& q, const TensorView<3>& k, const TensorView<3>& v);

// `t` matches `like` in dtype and shape (outputs and gradients).
Status check_like(const char* op, const char* name, const TensorView<4>& t, const char* like_name,
                  const TensorView<4>& like);
Status check_like(const char* op, const char* name, const TensorView<3>& t, const char* like_name,
                  const TensorView<3>& like);

// A per-row fp32 tensor ([B, Hq, Sq] batched or [Hq, total_q] varlen), rows contiguous.
Status check_row_stats(const char* op, const char* name, const TensorView<3>& t, int64_t b, int64_t h, int64_t s);
Status check_row_stats(const char* op, const char* name, const TensorView<2>& t, int64_t h, int64_t total);

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
