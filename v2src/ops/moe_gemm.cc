// MoE grouped GEMM (vLLM's invoke_fused_moe_kernel) and its launch helper.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "device_arch.h"
#include "fused_moe_gemm.h"
#include "fused_moe_gemm_wq.h"
#include "fused_moe_gemm_wq_hopper.h"
#include "moe_gemm_hopper.h"
#include "moe_internal.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;
using detail::fail;
using detail::cdiv;
using detail::is_contiguous;

int32_t moe_gemm_block_size(int64_t num_tokens, bool aligned) noexcept {
  // The BLOCK_SIZE_M column of DEFAULT_CONFIGS (tritonsrc/moe/configs.py, block_size_m).
  namespace t = detail::tables;
  const int32_t* rows = aligned ? t::kMoeBlockSizeMAligned : t::kMoeBlockSizeMUnaligned;
  size_t i = 0;
  while (i < std::size(t::kMoeMBins) && num_tokens > t::kMoeMBins[i]) ++i;
  return rows[i];
}

int32_t moe_gemm_block_size(int64_t num_tokens, int64_t topk, int64_t num_experts, bool aligned) noexcept {
  // configs.block_size_m with topk and num_experts: tall blocks for experts with many slots.
  namespace t = detail::tables;
  const int32_t bm = moe_gemm_block_size(num_tokens, aligned);
  if (!aligned || topk <= 0 || num_experts <= 0 || num_tokens <= 0 || bm >= t::kMoeTallBlockSizeM) return bm;
  num_tokens = std::min<int64_t>(num_tokens, INT32_MAX);  // raw integers: keep the product below 2^62
  topk = std::min<int64_t>(topk, INT32_MAX);
  return cdiv(num_tokens * topk, num_experts) >= t::kMoeTallBlockMinTokensPerExpert ? t::kMoeTallBlockSizeM : bm;
}

namespace detail {

namespace {

bool weight_only(QuantMode q) { return q == QuantMode::kInt8W8A16 || q == QuantMode::kInt4W4A16; }

const char* quant_name(QuantMode q) {
  switch (q) {
    case QuantMode::kFp8PerChannel: return "fp8 per-channel";
    case QuantMode::kInt8W8A16: return "int8 w8a16";
    case QuantMode::kInt4W4A16: return "int4 w4a16";
    default: return "quantized";
  }
}

// The issue-13 modes are compiled for aligned shapes and a subset of the
// block sizes (python/rules_moe.py): say so instead of "no kernel".
Status check_built(const char* op, const GemmJob& j, bool aligned) {
  if (!aligned)
    return fail(Status::kUnsupported, std::string(op) + ": the " + quant_name(j.quant) +
                                          " GEMM is built for aligned shapes only: K, N, the row strides and the "
                                          "pointers of a, b and c must be multiples of 16");
  const bool ok = weight_only(j.quant) ? (j.block_size == 16 || j.block_size == 64)
                                       : (j.block_size == 16 || j.block_size == 64 || j.block_size == 128);
  if (!ok)
    return fail(Status::kUnsupported, std::string(op) + ": the " + quant_name(j.quant) + " GEMM is built for block_size " +
                                          (weight_only(j.quant) ? "16 and 64" : "16, 64 and 128") + ", not " +
                                          std::to_string(j.block_size));
  return Status::kSuccess;
}

// The weight-only GEMMs' inputs (fused_moe_gemm_wq and its sm_90 int4 form take the same arguments).
template <class Inputs>
Inputs wq_inputs(const GemmJob& j) {
  using detail::strided;
  return Inputs{
      .a_ptr = strided(j.a, j.stride_am), .b_ptr = strided(j.b, j.stride_be, j.stride_bn),
      .c_ptr = strided(j.c, j.stride_cm), .b_scale_ptr = strided(j.b_scale, j.stride_bse, j.stride_bsn, j.stride_bsk),
      // Never read without zero points; any valid pointer keeps the argument defined.
      .b_zp_ptr = strided(j.b_zp ? static_cast<const void*>(j.b_zp) : j.b, j.stride_bze, j.stride_bzn, j.stride_bzk),
      .topk_weights_ptr = j.topk_weights, .sorted_token_ids_ptr = j.sorted_token_ids,
      .expert_ids_ptr = j.expert_ids, .num_tokens_post_padded_ptr = j.num_tokens_post_padded,
      .N = j.N, .K = j.K, .EM = j.EM, .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k,
      .group_size = std::max<int32_t>(j.group_size, 1), .has_zp = j.b_zp != nullptr, .num_experts = j.num_experts,
      .tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)),
  };
}

// The sm_90 int4 decode GEMM (python/rules_moe_hopper_wq.py, the dequantized weights as wgmma's
// register operand). Measured against fused_moe_gemm_wq (H100, c558b2f: fused_experts int4 g128
// 10-17% faster at M 8-64, even at M=1; docs/performance.md), so it is the sm_90 default where it
// was measured: K tiles of 128 (group sizes that are multiples of 128). AOTRITON_MOE_WQ_HOPPER=0
// turns it off, =1 takes it for K tiles of 64 too (group 64: tested, not timed). Read on every
// call (a process can compare both); set it before starting threads.
enum class WqHopper { kOff, kDefault, kOn };
WqHopper wq_hopper_mode() {
  const char* v = std::getenv("AOTRITON_MOE_WQ_HOPPER");
  if (v && std::strcmp(v, "0") == 0) return WqHopper::kOff;
  if (v && std::strcmp(v, "1") == 0) return WqHopper::kOn;
  return WqHopper::kDefault;
}

// AOTRITON_MOE_WQ_DOT_ORDER=0: fused_experts passes the int4 kernel its activations as they are
// (it permutes them in registers, X_DOT_ORDER off), to compare both forms in one process.
bool dot_order_disabled() {
  const char* v = std::getenv("AOTRITON_MOE_WQ_DOT_ORDER");
  return v && std::strcmp(v, "0") == 0;
}

// Whether the sm_90 int4 kernel serves the call (*takes) and in which functional: int4, align
// block size 16, a K tile (128 where it divides group_size, else 64) that divides K; and either a
// forced config names one of its configs, or none is forced, the mode takes this K tile, the GPU
// is sm_90 and this build compiled it. X_DOT_ORDER comes from the job.
Status choose_wq_hopper(const char* op, const GemmJob& j, int32_t split_k, Stream stream,
                        const KernelOptions* options, kernels::fused_moe_gemm_wq_hopper::Functional* f, bool* takes) {
  namespace kh = detail::kernels::fused_moe_gemm_wq_hopper;
  *takes = false;
  const int32_t k_tile = j.group_size % 128 == 0 ? 128 : 64;
  const bool serves = j.quant == QuantMode::kInt4W4A16 && j.block_size == 16 && j.group_size % 64 == 0 && j.K > 0 &&
                      j.K % k_tile == 0;
  *f = kh::Functional{j.c_dtype, DType::kUInt8, j.mul_routed_weight, j.block_size, k_tile, split_k,
                      j.b_zp != nullptr, j.x_dot_order};
  const bool forced = options && kh::has_config(options->force_config);
  if (forced && !serves)
    return fail(Status::kInvalidArgument, std::string(op) + ": force_config names a fused_moe_gemm_wq_hopper "
                                                            "config, but that kernel serves int4 calls with "
                                                            "block_size 16 and group sizes that are multiples of 64");
  if (!forced) {
    const WqHopper mode = wq_hopper_mode();
    const bool wanted = mode == WqHopper::kOn || (mode == WqHopper::kDefault && k_tile == 128);
    if (!serves || (options && options->force_config) || !wanted) return Status::kSuccess;
    int arch = 0, sms = 0;
    AOTRITON_RETURN_IF_ERROR(detail::device_info(stream, &arch, &sms));
    if (arch != 90 || !kh::built_for(*f, 90)) return Status::kSuccess;
  }
  *takes = true;
  return Status::kSuccess;
}

// Launches the sm_90 int4 kernel where it serves the call (*launched). Activations in its dot
// order (j.x_dot_order) are meant for it alone: any other kernel would read them scrambled.
Status launch_gemm_wq_hopper(const char* op, const GemmJob& j, int32_t split_k, Stream stream,
                             const KernelOptions* options, bool* launched) {
  namespace kh = detail::kernels::fused_moe_gemm_wq_hopper;
  kh::Functional f{};
  AOTRITON_RETURN_IF_ERROR(choose_wq_hopper(op, j, split_k, stream, options, &f, launched));
  if (!*launched && j.x_dot_order)
    return fail(Status::kInternal, std::string(op) + ": activations in the int4 GEMM's dot order, but the sm_90 "
                                                     "int4 kernel does not serve this call");
  return *launched ? kh::launch(wq_inputs<kh::Inputs>(j), f, stream, options) : Status::kSuccess;
}

Status launch_gemm_wq(const char* op, const GemmJob& j, Stream stream, const KernelOptions* options) {
  namespace k = detail::kernels::fused_moe_gemm_wq;
  const int32_t split_k = std::max<int32_t>(j.split_k, 1);
  bool on_hopper = false;
  AOTRITON_RETURN_IF_ERROR(launch_gemm_wq_hopper(op, j, split_k, stream, options, &on_hopper));
  if (on_hopper) return Status::kSuccess;
  const DType b_dtype = j.quant == QuantMode::kInt8W8A16 ? DType::kInt8 : DType::kUInt8;
  return k::launch(wq_inputs<k::Inputs>(j),
                   k::Functional{j.c_dtype, b_dtype, j.mul_routed_weight, j.block_size, split_k}, stream, options);
}

}  // namespace

Status wq_dot_order_k_tile(const char* op, const GemmJob& j, Stream stream, const KernelOptions* options,
                           int32_t* k_tile) {
  *k_tile = 0;
  if (dot_order_disabled()) return Status::kSuccess;
  GemmJob ordered = j;
  ordered.x_dot_order = true;
  kernels::fused_moe_gemm_wq_hopper::Functional f{};
  bool takes = false;
  AOTRITON_RETURN_IF_ERROR(choose_wq_hopper(op, ordered, std::max<int32_t>(j.split_k, 1), stream, options, &f, &takes));
  // (A forced config skips the build check: a build without the ordered form keeps them as they are.)
  if (takes && kernels::fused_moe_gemm_wq_hopper::built_for(f, 90)) *k_tile = f.BLOCK_SIZE_K;
  return Status::kSuccess;
}

Status launch_gemm(const char* op, const GemmJob& j, Stream stream, const KernelOptions* options) {
  for (auto [what, v] : {std::pair{"N", j.N}, {"K", j.K}, {"sorted_token_ids size", j.EM},
                         {"number of slots", j.num_valid_tokens}, {"top_k", j.top_k}, {"a row stride", j.stride_am},
                         {"b expert stride", j.stride_be}, {"b row stride", j.stride_bn}, {"c row stride", j.stride_cm},
                         {"a_scale strides", j.stride_asm}, {"a_scale strides", j.stride_ask},
                         {"b_scale strides", j.stride_bse}, {"b_scale strides", j.stride_bsn},
                         {"b_scale strides", j.stride_bsk}, {"number of experts", j.num_experts},
                         {"b_zp strides", j.stride_bze}, {"b_zp strides", j.stride_bzn}, {"b_zp strides", j.stride_bzk}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  // Offsets the kernel forms in int32 (tritonsrc/moe/grouped_gemm.py): the
  // column within an expert's weights (any layout, e.g. not [E, N, K]) and the
  // K-group offsets into the block scales.
  AOTRITON_RETURN_IF_ERROR(
      detail::check_i32_offset(op, "weight offset within an expert, (N - 1) * b row stride + K", j.N, j.stride_bn, j.K));
  if (j.quant == QuantMode::kFp8Block) {
    const int64_t kg = cdiv(j.K, kScaleGroup), ng = cdiv(j.N, kScaleGroup);
    AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "a_scale K-group offset", kg, j.stride_ask, 1));
    int64_t n_part = 0;
    AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "b_scale N-group offset", {ng - 1, j.stride_bsn}, &n_part));
    AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "b_scale group offset", kg, j.stride_bsk, n_part + 1));
  }
  if (j.quant == QuantMode::kFp8PerChannel || weight_only(j.quant)) {
    // Per-column scale (and zero point) offsets within an expert, formed in int32.
    const int64_t groups = j.quant == QuantMode::kInt4W4A16 ? j.K / std::max(j.group_size, 1) : 1;
    AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "b_scale offset within an expert", j.N, j.stride_bsn,
                                                      groups * std::max<int64_t>(j.stride_bsk, 1)));
    if (j.b_zp)
      AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "b_zp offset within an expert", cdiv(j.N, 2), j.stride_bzn,
                                                        groups * std::max<int64_t>(j.stride_bzk, 1)));
  }
  const bool aligned = j.K % 16 == 0 && j.N % 16 == 0 && j.stride_am % 16 == 0 && j.stride_be % 16 == 0 &&
                       j.stride_bn % 16 == 0 && j.stride_cm % 16 == 0 && aligned16(j.a) && aligned16(j.b) &&
                       aligned16(j.c);
  if (j.split_k > 1) {
    if (j.split_k != kGemmSplitK || j.block_size != 16 || !aligned || !j.mul_routed_weight)
      return fail(Status::kInternal, std::string(op) + ": split-K is built for aligned GEMMs with block_size 16, "
                                                       "the routed weight and " + std::to_string(kGemmSplitK) +
                                                       " splits only");
    // The kernel steps over a slot's partial rows with stride_cm * SPLIT_K (int32).
    AOTRITON_RETURN_IF_ERROR(check_i32(op, "c row stride * splits", j.stride_cm * j.split_k));
  }
  if (j.quant == QuantMode::kFp8PerChannel || weight_only(j.quant))
    AOTRITON_RETURN_IF_ERROR(check_built(op, j, aligned));
  if (j.num_valid_tokens == 0 || j.N == 0) return Status::kSuccess;
  if (weight_only(j.quant)) return launch_gemm_wq(op, j, stream, options);
  bool on_hopper = false;  // the sm_90 Gluon kernel (moe_gemm_hopper.cc) where it serves the call (unsplit)
  if (j.split_k <= 1) AOTRITON_RETURN_IF_ERROR(launch_gemm_hopper(op, j, aligned, stream, options, &on_hopper));
  if (on_hopper) return Status::kSuccess;
  namespace k = detail::kernels::fused_moe_gemm;
  using detail::strided;
  const k::Inputs in{
      .a_ptr = strided(j.a, j.stride_am), .b_ptr = strided(j.b, j.stride_be, j.stride_bn),
      .c_ptr = strided(j.c, j.stride_cm), .a_scale_ptr = strided(j.a_scale, j.stride_asm, j.stride_ask),
      .b_scale_ptr = strided(j.b_scale, j.stride_bse, j.stride_bsn, j.stride_bsk),
      .topk_weights_ptr = j.topk_weights, .sorted_token_ids_ptr = j.sorted_token_ids,
      .expert_ids_ptr = j.expert_ids, .num_tokens_post_padded_ptr = j.num_tokens_post_padded,
      .N = j.N, .K = j.K, .EM = j.EM, .num_valid_tokens = j.num_valid_tokens, .top_k = j.top_k,
      .num_experts = j.num_experts,
      .tokens_per_expert = cdiv(j.num_valid_tokens, std::max<int64_t>(j.num_experts, 1)),
  };
  k::Functional f{};
  f.ab_dtype = j.ab_dtype;
  f.c_dtype = j.c_dtype;
  f.QUANT = static_cast<int32_t>(j.quant);
  f.MUL_ROUTED_WEIGHT = j.mul_routed_weight;
  f.ALIGNED = aligned;
  f.BLOCK_SIZE_M = j.block_size;
  f.SPLIT_K = std::max<int32_t>(j.split_k, 1);
  return k::launch(in, f, stream, options);
}

}  // namespace detail

namespace {

bool is_half(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

Status check_scalar_scale(const char* op, const char* name, const void* data, DType dtype, int64_t numel,
                          bool contiguous, int64_t allowed2) {
  if (!data) return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is required for fp8 per-tensor");
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, dtype, DType::kFloat32));
  if (!(numel == 1 || numel == allowed2) || !contiguous)
    return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " must be contiguous with 1" +
                                              (allowed2 > 1 ? " or " + std::to_string(allowed2) : std::string()) +
                                              " elements (has " + std::to_string(numel) + ")");
  return Status::kSuccess;
}

template <int R>
Status check_block_scale(const char* op, const char* name, const TensorView<R>& t, const int64_t (&want)[R]) {
  if (!t.data) return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is required for fp8 block");
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, t, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t.dtype, DType::kFloat32));
  for (int i = 0; i < R; ++i)
    if (t.size(i) != want[i])
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " has shape " +
                                                detail::shape_string(t.sizes.data(), R) + ", expected " +
                                                detail::shape_string(want, R));
  return Status::kSuccess;
}

}  // namespace

// Shared with fused_experts (moe_internal.h).
namespace detail {

Status check_int4_k(const char* op, const char* what, int64_t K, int32_t group_size) {
  if (K % 2 != 0)
    return fail(Status::kInvalidArgument, std::string(op) + ": int4 weights pack two values per byte along K, but " +
                                              what + " = " + std::to_string(K) + " is odd");
  if (group_size <= 0 || group_size % kInt4GroupMultiple != 0)
    return fail(Status::kInvalidArgument, std::string(op) + ": int4 group_size = " + std::to_string(group_size) +
                                              " must be a positive multiple of " + std::to_string(kInt4GroupMultiple));
  if (K % group_size != 0)
    return fail(Status::kInvalidArgument, std::string(op) + ": int4 group_size = " + std::to_string(group_size) +
                                              " does not divide " + what + " = " + std::to_string(K));
  return Status::kSuccess;
}

Status check_zero_points(const char* op, const char* name, const TensorView<3>& zp, int64_t E, int64_t N,
                         int64_t groups) {
  if (!zp.data) return Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, zp, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, zp.dtype, DType::kUInt8));
  const int64_t want[3] = {E, cdiv(N, 2), groups};
  for (int i = 0; i < 3; ++i)
    if (zp.size(i) != want[i])
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " has shape " +
                                                detail::shape_string(zp.sizes.data(), 3) + ", expected " +
                                                detail::shape_string(want, 3) + " (uint4 packed two per byte along N)");
  return Status::kSuccess;
}

void set_channel_scale(GemmJob* j, const TensorView<3>& s) {
  j->b_scale = static_cast<const float*>(s.data);
  j->stride_bse = s.stride(0);
  j->stride_bsn = s.stride(1);
}

void set_group_scale(GemmJob* j, const TensorView<3>& s, const TensorView<3>& zp, int32_t group_size) {
  set_channel_scale(j, s);
  j->stride_bsk = s.stride(2);
  j->group_size = group_size;
  j->b_zp = static_cast<const uint8_t*>(zp.data);
  if (zp.data) {
    j->stride_bze = zp.stride(0);
    j->stride_bzn = zp.stride(1);
    j->stride_bzk = zp.stride(2);
  }
}

}  // namespace detail

using detail::check_int4_k;
using detail::check_zero_points;
using detail::set_channel_scale;
using detail::set_group_scale;

Status grouped_gemm(const GroupedGemmParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const char* op = "grouped_gemm";
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "a", p.a));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "b", p.b));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "c", p.c));
  const bool int4 = p.quant == QuantMode::kInt4W4A16;
  const int64_t E = p.b.size(0), N = p.b.size(1), K = int4 ? p.a.size(1) : p.b.size(2), slots = p.c.size(0);
  if (int4) {
    AOTRITON_RETURN_IF_ERROR(check_int4_k(op, "a.size(1)", K, p.group_size));
    if (p.b.size(2) * 2 != K)
      return fail(Status::kInvalidArgument, std::string(op) + ": b.size(2) = " + std::to_string(p.b.size(2)) +
                                                " but packed int4 holds K / 2 = " + std::to_string(K / 2) +
                                                " bytes per row (K = a.size(1) = " + std::to_string(K) + ")");
  } else {
    AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "a", p.a.size(1), 1, "b", K, 2));
  }
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "c", p.c.size(1), 1, "b", N, 1));
  if (!is_half(p.c.dtype))
    return fail(Status::kInvalidArgument, std::string(op) + ": c is " + dtype_name(p.c.dtype) + ", expected fp16 or bf16");
  switch (p.quant) {
    case QuantMode::kNone:
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "a", p.a.dtype, p.c.dtype));
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "b", p.b.dtype, p.a.dtype));
      break;
    case QuantMode::kFp8PerTensor:
    case QuantMode::kFp8Block:
    case QuantMode::kFp8PerChannel:
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "a", p.a.dtype, DType::kFloat8E4M3));
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "b", p.b.dtype, p.a.dtype));
      break;
    case QuantMode::kInt8W8A16:
    case QuantMode::kInt4W4A16:
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "a", p.a.dtype, p.c.dtype));
      AOTRITON_RETURN_IF_ERROR(check_dtype(op, "b", p.b.dtype, int4 ? DType::kUInt8 : DType::kInt8));
      break;
    default:
      return fail(Status::kInvalidArgument, std::string(op) + ": unknown quant mode");
  }
  if (p.top_k < 1) return fail(Status::kInvalidArgument, std::string(op) + ": top_k must be >= 1");
  int64_t a_slots = 0;
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "a.size(0) * top_k", {p.a.size(0), p.top_k}, &a_slots));
  if (slots > a_slots)
    return fail(Status::kInvalidArgument, std::string(op) + ": c.size(0) = " + std::to_string(slots) +
                                              " exceeds a.size(0) * top_k = " + std::to_string(a_slots));
  if (!detail::is_gemm_block_size(p.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": block_size = " + std::to_string(p.block_size) +
                                              " must be 16, 32, 64 or 128 (the moe_align block size)");
  for (auto [name, t] : {std::pair{"sorted_token_ids", &p.sorted_token_ids}, {"expert_ids", &p.expert_ids},
                         {"num_tokens_post_padded", &p.num_tokens_post_padded}}) {
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, *t));
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, t->dtype, DType::kInt32));
    if (!t->data || t->size(0) < 1)
      return fail(Status::kInvalidArgument, std::string(op) + ": " + name + " is empty or null");
  }
  const int64_t EM = p.sorted_token_ids.size(0);
  if (p.expert_ids.size(0) < cdiv(EM, p.block_size))
    return fail(Status::kInvalidArgument, std::string(op) + ": expert_ids has " + std::to_string(p.expert_ids.size(0)) +
                                              " entries, needs cdiv(sorted_token_ids.size(0), block_size) = " +
                                              std::to_string(cdiv(EM, p.block_size)));
  const float* weights = nullptr;
  if (p.mul_routed_weight) {
    const TensorView<2>& w = p.topk_weights;
    if (!w.data) return fail(Status::kInvalidArgument, std::string(op) + ": topk_weights is required with mul_routed_weight");
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_weights", w));
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", w.dtype, DType::kFloat32));
    if (!is_contiguous(w) || w.numel() != slots)
      return fail(Status::kInvalidArgument, std::string(op) + ": topk_weights must be contiguous with c.size(0) = " +
                                                std::to_string(slots) + " elements");
    weights = static_cast<const float*>(w.data);
  }
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(op, "c", p.c));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      op, {detail::span_of("c", p.c)},
      {detail::span_of("a", p.a), detail::span_of("b", p.b), detail::span_of("a_scale", p.a_scale),
       detail::span_of("b_scale", p.b_scale), detail::span_of("b_zp", p.b_zp),
       detail::span_of("topk_weights", p.topk_weights),
       detail::span_of("sorted_token_ids", p.sorted_token_ids), detail::span_of("expert_ids", p.expert_ids),
       detail::span_of("num_tokens_post_padded", p.num_tokens_post_padded)}));
  detail::GemmJob j{};
  j.a = p.a.data;
  j.b = p.b.data;
  j.c = p.c.data;
  j.topk_weights = weights;
  j.sorted_token_ids = static_cast<const int32_t*>(p.sorted_token_ids.data);
  j.expert_ids = static_cast<const int32_t*>(p.expert_ids.data);
  j.num_tokens_post_padded = static_cast<const int32_t*>(p.num_tokens_post_padded.data);
  j.N = N;
  j.K = K;
  j.EM = EM;
  j.num_valid_tokens = slots;
  j.num_experts = E;
  j.top_k = p.top_k;
  j.stride_am = p.a.stride(0);
  j.stride_be = p.b.stride(0);
  j.stride_bn = p.b.stride(1);
  j.stride_cm = p.c.stride(0);
  j.ab_dtype = p.a.dtype;
  j.c_dtype = p.c.dtype;
  j.quant = p.quant;
  j.mul_routed_weight = p.mul_routed_weight;
  j.block_size = p.block_size;
  if (p.quant == QuantMode::kFp8PerTensor) {
    // Any shape of the right numel, but a valid view (numel alone took negative sizes).
    if (p.a_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "a_scale", p.a_scale, false));
    if (p.b_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "b_scale", p.b_scale, false));
    AOTRITON_RETURN_IF_ERROR(check_scalar_scale(op, "a_scale", p.a_scale.data, p.a_scale.dtype, p.a_scale.numel(),
                                                is_contiguous(p.a_scale), 1));
    AOTRITON_RETURN_IF_ERROR(check_scalar_scale(op, "b_scale", p.b_scale.data, p.b_scale.dtype, p.b_scale.numel(),
                                                is_contiguous(p.b_scale), E));
    j.a_scale = static_cast<const float*>(p.a_scale.data);
    j.b_scale = static_cast<const float*>(p.b_scale.data);
    j.stride_bse = p.b_scale.numel() == 1 ? 0 : 1;
  } else if (p.quant == QuantMode::kFp8Block) {
    const int64_t kg = cdiv(K, detail::kScaleGroup), ng = cdiv(N, detail::kScaleGroup);
    AOTRITON_RETURN_IF_ERROR(check_block_scale<2>(op, "a_scale", p.a_scale, {p.a.size(0), kg}));
    AOTRITON_RETURN_IF_ERROR(check_block_scale<3>(op, "b_scale", p.b_scale, {E, ng, kg}));
    j.a_scale = static_cast<const float*>(p.a_scale.data);
    j.b_scale = static_cast<const float*>(p.b_scale.data);
    j.stride_asm = p.a_scale.stride(0);
    j.stride_ask = p.a_scale.stride(1);
    j.stride_bse = p.b_scale.stride(0);
    j.stride_bsn = p.b_scale.stride(1);
    j.stride_bsk = p.b_scale.stride(2);
  } else if (p.quant == QuantMode::kFp8PerChannel) {
    AOTRITON_RETURN_IF_ERROR(check_block_scale<2>(op, "a_scale", p.a_scale, {p.a.size(0), 1}));
    AOTRITON_RETURN_IF_ERROR(check_block_scale<3>(op, "b_scale", p.b_scale, {E, N, 1}));
    j.a_scale = static_cast<const float*>(p.a_scale.data);
    j.stride_asm = p.a_scale.stride(0);
    set_channel_scale(&j, p.b_scale);
  } else if (p.quant == QuantMode::kInt8W8A16) {
    AOTRITON_RETURN_IF_ERROR(check_block_scale<3>(op, "b_scale", p.b_scale, {E, N, 1}));
    set_channel_scale(&j, p.b_scale);
  } else if (int4) {
    const int64_t groups = K / p.group_size;
    AOTRITON_RETURN_IF_ERROR(check_block_scale<3>(op, "b_scale", p.b_scale, {E, N, groups}));
    AOTRITON_RETURN_IF_ERROR(check_zero_points(op, "b_zp", p.b_zp, E, N, groups));
    set_group_scale(&j, p.b_scale, p.b_zp, p.group_size);
  }
  return detail::launch_gemm(op, j, stream, options);
} catch (...) {
  return detail::fail_exception("grouped_gemm: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
