// fused_experts: align -> (quant) -> GEMM1 -> act_and_mul -> (quant) ->
// GEMM2 * routed weights -> moe_sum, on one stream, in a caller workspace.
#include <algorithm>
#include <limits>
#include <string>

#include "act_and_mul.h"
#include "act_and_mul_dot_order.h"
#include "act_and_mul_group_quant_fp8.h"
#include "moe_dot_order_copy.h"
#include "moe_internal.h"
#include "moe_sum.h"
#include "plain_launch.h"
#include "resolve_first.h"

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

namespace {

constexpr const char* kOp = "fused_experts";

// Shapes after validation.
struct Dims {
  int64_t M, K, N, E, topk, slots;
  int32_t block_size;
  bool dynamic_a1, dynamic_a2;
  int32_t split_k = 1;  // GEMM2's (quantized decode sizes; split_k_for())
};

// The GEMMs start early (programmatic dependent launch) at decode sizes only: fewer than one full
// align block (16 slots) per expert on average. Mixtral-like bf16 at M=64 (16 slots an expert)
// lost 97 us a call with PDL on (H200) and 77 us on the H100, where launching the GEMMs plainly
// (bench_pdl.py --exclude fused_moe_gemm) lost nothing, while M = 1-8 and DeepSeek-like M=64
// (2 slots an expert) saved 3-5 us (docs/notes-moe-perf.md, twenty-fourth session).
bool gemms_start_early(const Dims& d) { return d.slots < 16 * d.E; }

// act_and_mul launches plainly (so GEMM2 cannot start before GEMM1 ends) when fewer than one slot
// falls to 16 experts. DeepSeek-like bf16 at M=1 (8 slots, 256 experts) lost 6-10 us with it
// started early and gains 2.5 us plainly; with more slots an expert the early start saves 1-1.3 us
// (Mixtral-like M 1/8/64, DeepSeek-like M 8/64): bench_pdl.py --no-decode with and without
// --exclude act_and_mul, aa09baa on an H100 (docs/notes-moe-perf.md, twenty-sixth session).
// Its dot-order form (int4 on sm_90, dot_order) always launches plainly: started early it cost the
// Mixtral-like int4 layer (zero points, bf16) 39 / 33 us a call at M = 16 / 32 (graph-timed
// 0.341 / 0.342 ms against 0.302 / 0.309 plainly) and nothing at M = 1 / 8 / 64 (H100, e674429,
// bench_moe_coverage.py with and without AOTRITON_PDL_EXCLUDE=act_and_mul_dot_order).
bool act_starts_early(const Dims& d, bool dot_order) { return !dot_order && 16 * d.slots >= d.E; }

// Everything fused_experts keeps in the workspace (null pointers when sizing).
struct Layout {
  int32_t *sorted, *expert_ids, *ntpp;
  void* align_ws;
  void* cache13;  // GEMM1 output [slots, 2N], later GEMM2 output [slots, K]
  void* cache2;   // act_and_mul output [slots, N] (not with fused_act_quant)
  void *a1q, *a2q;  // fp8 activations [M, K] and [slots, N]
  float *a1s, *a2s;  // per-tensor: [1]; block: group-major [cdiv(K,128), M] and [cdiv(N,128), slots]
  float* partials;   // dynamic per-tensor scale
  void* split_out;   // split-K GEMM2 partials [slots * split_k, K] (split_k > 1 only)
  void* a1x;         // int4: the hidden states in the sm_90 kernel's dot order [M, K] (X_DOT_ORDER)
  size_t bytes;
};

// fp8 modes quantize the GEMM inputs; the weight-only modes read them as they are.
bool quantizes_activations(QuantMode q) {
  return q == QuantMode::kFp8PerTensor || q == QuantMode::kFp8Block || q == QuantMode::kFp8PerChannel;
}
bool weight_only(QuantMode q) { return q == QuantMode::kInt8W8A16 || q == QuantMode::kInt4W4A16; }
// 128x128 block scales: the activation and GEMM2's input quantization run as one
// kernel (act_and_mul_group_quant_fp8), built for fp16/bf16 and 16-element aligned rows.
bool fused_act_quant(QuantMode q, int64_t N, DType act) {
  return q == QuantMode::kFp8Block && N % 16 == 0 && act != DType::kFloat32;
}

Layout layout(void* base, const Dims& d, QuantMode quant, DType act) {
  detail::Carver c(base);
  Layout l{};
  const int64_t max_padded = moe_align_max_padded(d.slots, d.E, d.block_size);
  l.sorted = c.take<int32_t>(max_padded);
  l.expert_ids = c.take<int32_t>(cdiv(max_padded, d.block_size));
  l.ntpp = c.take<int32_t>(1);
  l.align_ws = c.take_bytes(static_cast<int64_t>(moe_align_workspace_size(d.slots, d.E)));
  const int64_t esize = dtype_size(act);
  l.cache13 = c.take_bytes(d.slots * std::max(2 * d.N, d.K) * esize);
  if (!fused_act_quant(quant, d.N, act)) l.cache2 = c.take_bytes(d.slots * d.N * esize);
  if (d.split_k > 1) l.split_out = c.take_bytes(d.slots * d.split_k * d.K * esize);
  if (quant == QuantMode::kInt4W4A16) l.a1x = c.take_bytes(d.M * d.K * esize);
  if (quantizes_activations(quant)) {
    l.a1q = c.take_bytes(d.M * d.K);
    l.a2q = c.take_bytes(d.slots * d.N);
  }
  if (quant == QuantMode::kFp8PerTensor) {
    if (d.dynamic_a1) l.a1s = c.take<float>(1);
    if (d.dynamic_a2) l.a2s = c.take<float>(1);
    if (d.dynamic_a1 || d.dynamic_a2)
      l.partials = c.take<float>(detail::kDynamicQuantMaxChunks);  // either route, any size
  } else if (quant == QuantMode::kFp8Block) {
    l.a1s = c.take<float>(d.M * cdiv(d.K, detail::kScaleGroup));
    l.a2s = c.take<float>(d.slots * cdiv(d.N, detail::kScaleGroup));
  } else if (quant == QuantMode::kFp8PerChannel) {  // per-token scales
    l.a1s = c.take<float>(d.M);
    l.a2s = c.take<float>(d.slots);
  }
  l.bytes = c.size();
  return l;
}

// Split-K of GEMM2 at decode sizes: when its tiles (at most min(slots, E)
// experts x cdiv(K, kSplitKTileN) output columns) leave SMs of an sm_90 part
// (kSplitKSms) idle and its K (the intermediate size N) is long, kGemmSplitK CTAs
// share each tile's K and moe_sum adds the partials. Mixtral-like int4 GEMM2 at
// M=1: 79 -> 37 us (tritonsrc/moe/configs.py WQ_SPLIT_K). The GEMM is built
// split for aligned shapes with 16-row blocks and the routed weight in GEMM2,
// quantized weights only: bf16 Mixtral M=1 ran at 0.94 of the roofline unsplit
// and 0.90 split (fp8 block 0.59 -> 0.66, int4 0.27 -> 0.36).
int32_t split_k_for(const Dims& d, QuantMode quant, const TensorView<3>& w2, bool router_weight_on_input) {
  namespace t = detail::tables;
  const bool few_tiles = std::min(d.slots, d.E) * cdiv(d.K, t::kSplitKTileN) < t::kSplitKSms;
  // GEMM2's aligned form (detail::launch_gemm): the workspace operands always are.
  const bool aligned = d.K % 16 == 0 && d.N % 16 == 0 && detail::aligned16(w2.data) && w2.stride(0) % 16 == 0 &&
                       w2.stride(1) % 16 == 0;
  return quant != QuantMode::kNone && d.block_size == 16 && aligned && !router_weight_on_input && few_tiles &&
                 d.N >= detail::kGemmSplitK * t::kSplitKMinK
             ? detail::kGemmSplitK : 1;
}

Status fail_arg(const std::string& what) { return fail(Status::kInvalidArgument, std::string(kOp) + ": " + what); }

Status check_per_tensor(const char* name, const void* data, DType dtype, int64_t numel, bool contiguous,
                        int64_t E, bool required) {
  if (!data)
    return required ? fail_arg(std::string(name) + " is required for fp8 per-tensor") : Status::kSuccess;
  AOTRITON_RETURN_IF_ERROR(check_dtype(kOp, name, dtype, DType::kFloat32));
  if (!contiguous || !(numel == 1 || numel == E))
    return fail_arg(std::string(name) + " must be contiguous with 1" + (E > 1 ? " or " + std::to_string(E) : "") +
                    " elements (has " + std::to_string(numel) + ")");
  return Status::kSuccess;
}

// Per-channel [E, rows, 1] or int4 group [E, rows, groups] fp32 weight scales.
Status check_weight_scale(const char* name, const TensorView<3>& t, int64_t E, int64_t rows, int64_t groups,
                          const char* mode) {
  if (!t.data) return fail_arg(std::string(name) + " is required for " + mode);
  AOTRITON_RETURN_IF_ERROR(check_tensor(kOp, name, t, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(kOp, name, t.dtype, DType::kFloat32));
  const int64_t want[3] = {E, rows, groups};
  for (int i = 0; i < 3; ++i)
    if (t.size(i) != want[i])
      return fail_arg(std::string(name) + " has shape " + detail::shape_string(t.sizes.data(), 3) + ", expected " +
                      detail::shape_string(want, 3) + " for " + mode);
  return Status::kSuccess;
}

// The issue-13 modes: weight scales (and int4 zero points / group), no static activation scales.
Status validate_quant_modes(const FusedExpertsParams& p, const Dims& d) {
  if (p.a1_scale.data || p.a2_scale.data)
    return fail_arg(std::string("a1_scale / a2_scale must be absent with ") +
                    (p.quant == QuantMode::kFp8PerChannel ? "fp8 per-channel (activations get dynamic per-token scales)"
                                                          : "weight-only quantization (activations stay fp16/bf16)"));
  if (p.quant == QuantMode::kInt4W4A16) {  // K and N were checked against the group in validate()
    const int64_t g1 = d.K / p.group_size, g2 = d.N / p.group_size;
    AOTRITON_RETURN_IF_ERROR(check_weight_scale("w1_scale", p.w1_scale, d.E, 2 * d.N, g1, "int4 w4a16"));
    AOTRITON_RETURN_IF_ERROR(check_weight_scale("w2_scale", p.w2_scale, d.E, d.K, g2, "int4 w4a16"));
    if (!p.w1_zp.data != !p.w2_zp.data) return fail_arg("w1_zp and w2_zp must be given together (or neither)");
    AOTRITON_RETURN_IF_ERROR(detail::check_zero_points(kOp, "w1_zp", p.w1_zp, d.E, 2 * d.N, g1));
    AOTRITON_RETURN_IF_ERROR(detail::check_zero_points(kOp, "w2_zp", p.w2_zp, d.E, d.K, g2));
    return Status::kSuccess;
  }
  const char* mode = p.quant == QuantMode::kFp8PerChannel ? "fp8 per-channel" : "int8 w8a16";
  AOTRITON_RETURN_IF_ERROR(check_weight_scale("w1_scale", p.w1_scale, d.E, 2 * d.N, 1, mode));
  return check_weight_scale("w2_scale", p.w2_scale, d.E, d.K, 1, mode);
}

Status check_block(const char* name, const TensorView<3>& t, int64_t E, int64_t rows, int64_t cols) {
  if (!t.data) return fail_arg(std::string(name) + " is required for fp8 block quantization");
  AOTRITON_RETURN_IF_ERROR(check_tensor(kOp, name, t, false));
  AOTRITON_RETURN_IF_ERROR(check_dtype(kOp, name, t.dtype, DType::kFloat32));
  const int64_t want[3] = {E, cdiv(rows, detail::kScaleGroup), cdiv(cols, detail::kScaleGroup)};
  for (int i = 0; i < 3; ++i)
    if (t.size(i) != want[i])
      return fail_arg(std::string(name) + " has shape " + detail::shape_string(t.sizes.data(), 3) + ", expected " +
                      detail::shape_string(want, 3));
  return Status::kSuccess;
}

Status validate(const FusedExpertsParams& p, Dims* d) {
  const char* op = kOp;
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "hidden_states", p.hidden_states));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "w1", p.w1));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "w2", p.w2));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_weights", p.topk_weights));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "topk_ids", p.topk_ids));
  AOTRITON_RETURN_IF_ERROR(check_tensor(op, "output", p.output));
  const DType act = p.hidden_states.dtype;
  if (act != DType::kFloat16 && act != DType::kBFloat16)
    return fail_arg(std::string("hidden_states is ") + dtype_name(act) + ", expected fp16 or bf16");
  if (p.quant != QuantMode::kNone && !quantizes_activations(p.quant) && !weight_only(p.quant))
    return fail_arg("unknown quant mode");
  const DType wdt = p.quant == QuantMode::kNone               ? act
                    : p.quant == QuantMode::kInt8W8A16        ? DType::kInt8
                    : p.quant == QuantMode::kInt4W4A16        ? DType::kUInt8
                                                              : DType::kFloat8E4M3;
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "w1", p.w1.dtype, wdt));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "w2", p.w2.dtype, wdt));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "output", p.output.dtype, act));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", p.topk_weights.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  d->M = p.hidden_states.size(0);
  d->K = p.hidden_states.size(1);
  d->E = p.w1.size(0);
  d->topk = p.topk_ids.size(1);
  if (p.w1.size(1) % 2 != 0) return fail_arg("w1.size(1) = " + std::to_string(p.w1.size(1)) + " must be even (2N)");
  d->N = p.w1.size(1) / 2;
  // int4 weights hold two K values per byte: w1 [E, 2N, K / 2], w2 [E, K, N / 2].
  const int64_t per_byte = p.quant == QuantMode::kInt4W4A16 ? 2 : 1;
  if (per_byte == 2) {  // odd K / N or a bad group: say so before the packed-size checks
    AOTRITON_RETURN_IF_ERROR(detail::check_int4_k(kOp, "the hidden size (GEMM1 K)", d->K, p.group_size));
    AOTRITON_RETURN_IF_ERROR(detail::check_int4_k(kOp, "the intermediate size N (GEMM2 K)", d->N, p.group_size));
  }
  if (p.w1.size(2) * per_byte != d->K)
    return fail_arg("w1.size(2) = " + std::to_string(p.w1.size(2)) + " but the hidden size is " + std::to_string(d->K) +
                    (per_byte == 2 ? " (packed int4: w1.size(2) must be K / 2)" : ""));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "w2", p.w2.size(0), 0, "w1", d->E, 0));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "w2", p.w2.size(1), 1, "hidden_states", d->K, 1));
  if (p.w2.size(2) * per_byte != d->N)
    return fail_arg("w2.size(2) = " + std::to_string(p.w2.size(2)) + " but w1.size(1) / 2 = " + std::to_string(d->N) +
                    (per_byte == 2 ? " (packed int4: w2.size(2) must be N / 2)" : ""));
  for (auto [name, t] : {std::pair{"topk_ids", &p.topk_ids}, {"topk_weights", &p.topk_weights}, {"output", &p.output}})
    AOTRITON_RETURN_IF_ERROR(check_same_dim(op, name, t->size(0), 0, "hidden_states", d->M, 0));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "topk_weights", p.topk_weights.size(1), 1, "topk_ids", d->topk, 1));
  AOTRITON_RETURN_IF_ERROR(check_same_dim(op, "output", p.output.size(1), 1, "hidden_states", d->K, 1));
  if (!is_contiguous(p.topk_ids)) return fail_arg("topk_ids must be contiguous");
  if (!is_contiguous(p.topk_weights)) return fail_arg("topk_weights must be contiguous");
  if (d->E < 1 || d->E > detail::kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": w1.size(0) (local experts) = " + std::to_string(d->E) +
                                          " must be in [1, 512]");
  if (d->topk < 1) return fail_arg("topk_ids.size(1) (top-k) must be >= 1");
  if (p.apply_router_weight_on_input && d->topk != 1)
    return fail_arg("apply_router_weight_on_input needs top-k = 1 (the weight scales the token's input row), got "
                    "top-k = " + std::to_string(d->topk));
  if (d->K < 1 || d->N < 1) return fail_arg("hidden size and w1.size(1) must be positive");
  if (!detail::aligned16(p.output.data)) return fail_arg("output must be 16-byte aligned");
  if (p.activation != Activation::kSilu && p.activation != Activation::kGelu && p.activation != Activation::kGeluTanh &&
      p.activation != Activation::kSwigluOai)
    return fail_arg("unknown activation " + std::to_string(static_cast<int32_t>(p.activation)));
  AOTRITON_RETURN_IF_ERROR(detail::check_expert_map(op, p.expert_map, d->E));
  // Checked products: a wrapped value must not pass the int32 checks.
  int64_t cache_elems = 0, act_elems = 0;
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "tokens * top-k", {d->M, d->topk}, &d->slots));
  AOTRITON_RETURN_IF_ERROR(
      detail::checked_mul(op, "tokens * top-k * max(2N, K)", {d->slots, std::max(2 * d->N, d->K)}, &cache_elems));
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "tokens * hidden size", {d->M, d->K}, &act_elems));
  for (auto [what, v] : {std::pair{"tokens * top-k", d->slots}, {"tokens * top-k * max(2N, K)", cache_elems},
                         {"tokens * hidden size", act_elems}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  d->dynamic_a1 = d->dynamic_a2 = false;
  if (p.quant == QuantMode::kFp8PerTensor) {
    // Any shape of the right numel, but a valid view (numel alone took negative sizes).
    if (p.w1_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "w1_scale", p.w1_scale, false));
    if (p.w2_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "w2_scale", p.w2_scale, false));
    if (p.a1_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "a1_scale", p.a1_scale, false));
    if (p.a2_scale.data) AOTRITON_RETURN_IF_ERROR(check_tensor(op, "a2_scale", p.a2_scale, false));
    AOTRITON_RETURN_IF_ERROR(check_per_tensor("w1_scale", p.w1_scale.data, p.w1_scale.dtype, p.w1_scale.numel(),
                                              is_contiguous(p.w1_scale), d->E, true));
    AOTRITON_RETURN_IF_ERROR(check_per_tensor("w2_scale", p.w2_scale.data, p.w2_scale.dtype, p.w2_scale.numel(),
                                              is_contiguous(p.w2_scale), d->E, true));
    AOTRITON_RETURN_IF_ERROR(check_per_tensor("a1_scale", p.a1_scale.data, p.a1_scale.dtype, p.a1_scale.numel(),
                                              true, 1, false));
    AOTRITON_RETURN_IF_ERROR(check_per_tensor("a2_scale", p.a2_scale.data, p.a2_scale.dtype, p.a2_scale.numel(),
                                              true, 1, false));
    d->dynamic_a1 = !p.a1_scale.data;
    d->dynamic_a2 = !p.a2_scale.data;
  } else if (p.quant == QuantMode::kFp8Block) {
    if (p.block_n != detail::kScaleGroup || p.block_k != detail::kScaleGroup)
      return fail(Status::kUnsupported, std::string(op) + ": block quantization supports block shape [128, 128] only");
    AOTRITON_RETURN_IF_ERROR(check_block("w1_scale", p.w1_scale, d->E, 2 * d->N, d->K));
    AOTRITON_RETURN_IF_ERROR(check_block("w2_scale", p.w2_scale, d->E, d->K, d->N));
    if (p.a1_scale.data || p.a2_scale.data)
      return fail_arg("a1_scale / a2_scale must be absent with block quantization (activations are quantized "
                      "per token group on the fly)");
  }
  if (p.quant == QuantMode::kFp8PerChannel || weight_only(p.quant)) {
    AOTRITON_RETURN_IF_ERROR(validate_quant_modes(p, *d));
    if (d->K % 16 != 0 || d->N % 16 != 0)
      return fail(Status::kUnsupported, std::string(op) + ": this quantization mode is built for hidden and "
                                                          "intermediate sizes that are multiples of 16");
  }
  const bool aligned = d->K % 16 == 0 && d->N % 16 == 0;
  // Slots per expert count the global experts: with an expert map the others' slots are dropped.
  const int64_t experts = p.expert_map.data ? std::max<int64_t>(p.expert_map.size(0), d->E) : d->E;
  d->block_size = p.block_size ? p.block_size : moe_gemm_block_size(d->M, d->topk, experts, aligned);
  // The weight-only GEMM is built with BLOCK_SIZE_M 16 and 64 (python/rules_moe.py).
  if (!p.block_size && weight_only(p.quant)) d->block_size = std::min(d->block_size, 64);
  if (!detail::is_gemm_block_size(d->block_size))
    return fail_arg("block_size = " + std::to_string(d->block_size) + " must be 0, 16, 32, 64 or 128");
  d->split_k = split_k_for(*d, p.quant, p.w2, p.apply_router_weight_on_input);
  return Status::kSuccess;
}

// GEMM job fields shared by both GEMMs.
detail::GemmJob gemm_common(const Layout& l, const Dims& d, QuantMode quant, DType act) {
  detail::GemmJob j{};
  j.sorted_token_ids = l.sorted;
  j.expert_ids = l.expert_ids;
  j.num_tokens_post_padded = l.ntpp;
  // The GEMM grid covers EM rows of sorted ids. At most min(E, slots) experts get
  // slots, each padding one block at most: a bound on num_tokens_post_padded
  // tighter than the sorted ids' size (DeepSeek-like M=1: 8 blocks where the
  // size, 256 experts' padding, has 241), so decode grids launch no idle CTAs.
  j.EM = moe_align_max_padded(d.slots, std::min(d.E, d.slots), d.block_size);
  j.num_valid_tokens = d.slots;
  j.num_experts = d.E;
  j.ab_dtype = quantizes_activations(quant) ? DType::kFloat8E4M3 : act;
  j.c_dtype = act;
  j.quant = quant;
  j.block_size = d.block_size;
  return j;
}

// Weight scale pointer and strides into a GEMM job.
void set_b_scale(detail::GemmJob* j, const TensorView<3>& s, QuantMode quant, const TensorView<3>& zp,
                 int32_t group_size) {
  if (quant == QuantMode::kFp8PerChannel || quant == QuantMode::kInt8W8A16) return detail::set_channel_scale(j, s);
  if (quant == QuantMode::kInt4W4A16) return detail::set_group_scale(j, s, zp, group_size);
  j->b_scale = static_cast<const float*>(s.data);
  if (quant == QuantMode::kFp8PerTensor) {
    j->stride_bse = s.numel() == 1 ? 0 : 1;
  } else if (quant == QuantMode::kFp8Block) {
    j->stride_bse = s.stride(0);
    j->stride_bsn = s.stride(1);
    j->stride_bsk = s.stride(2);
  }
}

// Quantizes x [rows, cols] (row stride ld) into q (contiguous) for a GEMM's A
// operand and points the job at it.
Status quantize_a(detail::GemmJob* j, const void* x, int64_t rows, int64_t cols, int64_t ld, DType act,
                  QuantMode quant, void* q, float* block_scales, const void* static_scale, float* dyn_scale,
                  float* partials, Stream stream) {
  detail::QuantJob qj{x, act, q, rows, cols, ld, cols};
  j->a = q;
  j->stride_am = cols;
  if (quant == QuantMode::kFp8Block) {
    // Group-major ([groups, rows]): a K step's scales of a block of rows are near each
    // other, not a 4-byte read per row from rows cdiv(cols, 128) * 4 bytes apart.
    j->a_scale = block_scales;
    j->stride_asm = 1;
    j->stride_ask = rows;
    return detail::launch_group_quant(kOp, qj, block_scales, 1, rows, stream);
  }
  if (quant == QuantMode::kFp8PerChannel) {  // dynamic per-token scales, [rows] in block_scales
    j->a_scale = block_scales;
    j->stride_asm = 1;
    return detail::launch_token_quant(kOp, qj, block_scales, stream);
  }
  const float* scale = static_cast<const float*>(static_scale);
  if (!scale && detail::dynamic_quant_chunked(qj)) {
    j->a_scale = dyn_scale;
    return detail::launch_dynamic_quant_chunks(kOp, qj, partials, dyn_scale, stream);
  }
  if (!scale) {
    AOTRITON_RETURN_IF_ERROR(detail::launch_dynamic_scale(kOp, qj, partials, dyn_scale, stream));
    scale = dyn_scale;
  }
  j->a_scale = scale;
  return detail::launch_tensor_quant(kOp, qj, scale, stream);
}

Status launch_all(const FusedExpertsParams& p, const Dims& d, Stream stream, const KernelOptions* options);

// Decode-sized GEMM2 input with a dynamic per-tensor scale: the activation runs in
// the chunked quantization, which reads GEMM1's output (gate | up) itself.
detail::QuantJob act_quant_job(const Layout& l, const Dims& d, DType act) {
  return detail::QuantJob{l.cache13, act, l.a2q, d.slots, d.N, 2 * d.N, d.N};
}
bool fused_act_dynamic_quant(const FusedExpertsParams& p, const Dims& d, const Layout& l, DType act) {
  return p.quant == QuantMode::kFp8PerTensor && d.dynamic_a2 && act != DType::kFloat32 &&
         (p.activation == Activation::kSilu || p.activation == Activation::kGeluTanh) &&
         detail::dynamic_quant_chunked(act_quant_job(l, d, act));
}

// GEMM2's fp8 input with 128-column group scales straight from GEMM1's output.
Status launch_act_group_quant(const FusedExpertsParams& p, const Dims& d, const Layout& l, DType act,
                              detail::GemmJob* g2, Stream stream) {
  g2->a = l.a2q;
  g2->stride_am = d.N;
  g2->a_scale = l.a2s;  // group-major [groups, slots], as quantize_a lays out GEMM1's
  g2->stride_asm = 1;
  g2->stride_ask = d.slots;
  namespace k = detail::kernels::act_and_mul_group_quant_fp8;
  const k::Inputs in{.q_ptr = detail::strided(l.a2q, d.N), .s_ptr = detail::strided(l.a2s, 1, d.slots),
                     .in_ptr = detail::strided(l.cache13, 2 * d.N), .n_rows = d.slots, .n_cols = d.N};
  return k::launch(in, k::Functional{act, static_cast<int32_t>(p.activation), detail::kScaleGroup}, stream,
                   nullptr);
}

}  // namespace

namespace {

// ---------------------------------------------------------------- large M
// The kernels index with int32 (slot counts, GEMM rows x width, quantized
// activations), so an input of more tokens than one pass can address runs in
// passes of rows_per_pass() tokens, each a complete fused_experts call on a
// row slice (like vLLM's chunking). A dynamic per-tensor fp8 activation scale
// is then computed per pass. The workspace is sized for one pass.

// Tokens per pass: every per-pass size below fits int32. Returns M when one
// pass suffices, or when the shapes are invalid (validate() then reports them).
int64_t rows_per_pass(const FusedExpertsParams& p) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t M = p.hidden_states.size(0), K = p.hidden_states.size(1), topk = p.topk_ids.size(1);
  const int64_t N = p.w1.size(1) / 2, E = p.w1.size(0);
  if (M <= 0 || K <= 0 || N <= 0 || topk <= 0 || E <= 0 || E > detail::kMaxExperts) return M;
  const int64_t padding = E * (128 - 1);  // moe_align pads every expert to a block (<= 128 slots)
  // GEMM output elements per token; sizes of independent tensors can make the
  // product wrap (even to 0, a division by zero below): validate() reports it.
  int64_t width = 0;
  if (__builtin_mul_overflow(topk, std::max(2 * N, K), &width)) return M;
  int64_t rows = std::min({(kMax - padding) / topk,  // padded slots
                           kMax / width,             // GEMM outputs [slots, max(2N, K)]
                           kMax / K});               // hidden / output rows, fp8 copy of x
  if (rows >= M || rows < 16) return M;
  // A multiple of 16 rows keeps every slice 16-byte aligned like its tensor.
  return rows >= 1024 ? rows / 1024 * 1024 : rows / 16 * 16;
}

template <int R>
TensorView<R> row_slice(TensorView<R> t, int64_t first, int64_t rows) {
  t.data = static_cast<char*>(t.data) + first * t.stride(0) * dtype_size(t.dtype);
  t.sizes[0] = rows;
  return t;
}

// Rows [first, first + rows) of every per-token tensor.
FusedExpertsParams pass_params(const FusedExpertsParams& p, int64_t first, int64_t rows) {
  FusedExpertsParams q = p;
  q.hidden_states = row_slice(p.hidden_states, first, rows);
  q.topk_weights = row_slice(p.topk_weights, first, rows);
  q.topk_ids = row_slice(p.topk_ids, first, rows);
  q.output = row_slice(p.output, first, rows);
  return q;
}

// Checks the params of every pass and returns the workspace the largest needs.
Status passes_workspace(const FusedExpertsParams& p, int64_t per_pass, size_t* bytes) {
  const int64_t M = p.hidden_states.size(0);
  *bytes = 0;
  // The first and the last pass are the only distinct shapes (one pass: one shape).
  const int64_t last = M > per_pass ? (M - 1) / per_pass * per_pass : 0;
  for (int64_t first = 0;; first = last) {
    Dims d{};
    AOTRITON_RETURN_IF_ERROR(validate(pass_params(p, first, std::min(per_pass, M - first)), &d));
    *bytes = std::max(*bytes, layout(nullptr, d, p.quant, p.hidden_states.dtype).bytes);
    if (first == last) return Status::kSuccess;
  }
}

Status fused_experts_pass(const FusedExpertsParams& p, Stream stream, const KernelOptions* options);

}  // namespace

Status fused_experts_workspace_size(const FusedExpertsParams& p, size_t* bytes) noexcept try {
  detail::clear_error();
  if (!bytes) return fail_arg("bytes is a null pointer");
  return passes_workspace(p, rows_per_pass(p), bytes);
} catch (...) {
  return detail::fail_exception("fused_experts_workspace_size: unexpected exception");
}

Status fused_experts(const FusedExpertsParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  const int64_t M = p.hidden_states.size(0), per_pass = rows_per_pass(p);
  // One pass validates and checks its workspace itself; several are all
  // checked before the first launches.
  if (per_pass >= M) return fused_experts_pass(p, stream, options);
  size_t need = 0;
  AOTRITON_RETURN_IF_ERROR(passes_workspace(p, per_pass, &need));
  AOTRITON_RETURN_IF_ERROR(detail::check_workspace(kOp, p.workspace, p.workspace_bytes, need));
  for (int64_t first = 0; first < M; first += per_pass)
    AOTRITON_RETURN_IF_ERROR(fused_experts_pass(pass_params(p, first, std::min(per_pass, M - first)), stream, options));
  return Status::kSuccess;
} catch (...) {
  return detail::fail_exception("fused_experts: unexpected exception");
}

namespace {

// One pass: every size fits the kernels' int32 indexing.
Status fused_experts_pass(const FusedExpertsParams& p, Stream stream, const KernelOptions* options) {
  Dims d{};
  AOTRITON_RETURN_IF_ERROR(validate(p, &d));
  const DType act = p.hidden_states.dtype;
  const size_t need = layout(nullptr, d, p.quant, act).bytes;
  AOTRITON_RETURN_IF_ERROR(detail::check_workspace(kOp, p.workspace, p.workspace_bytes, need));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "output", p.output));
  // In place (vLLM's inplace=True): output may be exactly hidden_states. Every
  // kernel that reads hidden_states runs, in stream order, before the final
  // reduction writes output, and a pass touches only its own rows.
  const bool in_place = p.output.data == p.hidden_states.data && p.output.sizes == p.hidden_states.sizes &&
                        p.output.strides == p.hidden_states.strides && p.output.dtype == p.hidden_states.dtype;
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      kOp, {detail::span_of("output", p.output), detail::bytes_of("workspace", p.workspace, need)},
      {in_place ? detail::Region{"hidden_states", 0, 0} : detail::span_of("hidden_states", p.hidden_states),
       detail::span_of("w1", p.w1), detail::span_of("w2", p.w2),
       detail::span_of("topk_weights", p.topk_weights), detail::span_of("topk_ids", p.topk_ids),
       detail::span_of("expert_map", p.expert_map), detail::span_of("w1_scale", p.w1_scale),
       detail::span_of("w2_scale", p.w2_scale), detail::span_of("a1_scale", p.a1_scale),
       detail::span_of("a2_scale", p.a2_scale), detail::span_of("w1_zp", p.w1_zp),
       detail::span_of("w2_zp", p.w2_zp)}));
  if (d.M == 0) return Status::kSuccess;
  // Up to ten launches: all are resolved before the first (resolve_first.h).
  return detail::resolve_then_launch([&] { return launch_all(p, d, stream, options); });
}

Status launch_all(const FusedExpertsParams& p, const Dims& d, Stream stream, const KernelOptions* options) {
  const DType act = p.hidden_states.dtype;
  const Layout l = layout(p.workspace, d, p.quant, act);
  const auto* ids = static_cast<const int32_t*>(p.topk_ids.data);
  const auto* emap = static_cast<const int32_t*>(p.expert_map.data);
  // 0: no map (a given one has at least E >= 1 entries: check_expert_map), as the kernels read it.
  const int64_t emap_len = emap ? p.expert_map.size(0) : 0;

  // 1. Slots grouped by expert, padded to the GEMM's BLOCK_SIZE_M.
  detail::AlignJob aj{ids, emap, d.slots, d.E, d.block_size, l.sorted, l.expert_ids, l.ntpp, l.align_ws, emap_len};
  AOTRITON_RETURN_IF_ERROR(detail::launch_align(kOp, aj, stream));

  // 2. GEMM1: cache1[slot] = x[slot / topk] @ w1[e]^T.
  detail::GemmJob g1 = gemm_common(l, d, p.quant, act);
  g1.b = p.w1.data;
  g1.c = l.cache13;
  g1.N = 2 * d.N;
  g1.K = d.K;
  g1.top_k = d.topk;
  g1.stride_be = p.w1.stride(0);
  g1.stride_bn = p.w1.stride(1);
  g1.stride_cm = 2 * d.N;
  if (p.apply_router_weight_on_input) {  // top-1: w * (x @ w1^T) == (w * x) @ w1^T
    g1.topk_weights = static_cast<const float*>(p.topk_weights.data);
    g1.mul_routed_weight = true;
  }
  set_b_scale(&g1, p.w1_scale, p.quant, p.w1_zp, p.group_size);
  // int4 on sm_90: GEMM1 reads the hidden states copied into its dot order. Unaligned ones keep the
  // plain route, whose GEMM check names the alignment the int4 GEMMs are built for.
  int32_t k1 = 0;
  const bool x_aligned = detail::aligned16(p.hidden_states.data) && p.hidden_states.stride(0) % 16 == 0;
  if (p.quant == QuantMode::kInt4W4A16 && x_aligned)
    AOTRITON_RETURN_IF_ERROR(detail::wq_dot_order_k_tile(kOp, g1, stream, options, &k1));
  if (k1 && !detail::kernels::moe_dot_order_copy::built_for({act, k1}, 90)) k1 = 0;  // a narrower build
  if (k1) {
    namespace k = detail::kernels::moe_dot_order_copy;
    const k::Inputs in{.out_ptr = detail::strided(l.a1x, d.K),
                       .in_ptr = detail::strided(p.hidden_states.data, p.hidden_states.stride(0)),
                       .n_rows = d.M, .n_cols = d.K};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{act, k1}, stream, nullptr));
    g1.a = l.a1x;
    g1.stride_am = d.K;
    g1.x_dot_order = true;
  } else if (!quantizes_activations(p.quant)) {
    g1.a = p.hidden_states.data;
    g1.stride_am = p.hidden_states.stride(0);
  } else {
    AOTRITON_RETURN_IF_ERROR(quantize_a(&g1, p.hidden_states.data, d.M, d.K, p.hidden_states.stride(0), act, p.quant,
                                        l.a1q, l.a1s, p.a1_scale.data, l.a1s, l.partials, stream));
  }
  {
    detail::PlainLaunchScope plain(!gemms_start_early(d));
    AOTRITON_RETURN_IF_ERROR(detail::launch_gemm(kOp, g1, stream, options));
  }

  // GEMM2's job (launched in step 4): out_slot[slot] = w[slot] * cache2[slot] @ w2[e]^T. With
  // top-1 the slot rows are the output rows: no reduction pass. Split-K writes d.split_k partial
  // rows per slot, [slots, split_k, K], for moe_sum.
  const bool split = d.split_k > 1;
  const bool direct = d.topk == 1 && !split;
  void* c2 = direct ? p.output.data : split ? l.split_out : l.cache13;
  const int64_t ldc2 = direct ? p.output.stride(0) : d.K;
  detail::GemmJob g2 = gemm_common(l, d, p.quant, act);
  g2.b = p.w2.data;
  g2.c = c2;
  g2.N = d.K;
  g2.K = d.N;
  g2.top_k = 1;
  g2.stride_be = p.w2.stride(0);
  g2.stride_bn = p.w2.stride(1);
  g2.stride_cm = ldc2;
  g2.topk_weights = static_cast<const float*>(p.topk_weights.data);
  g2.mul_routed_weight = !p.apply_router_weight_on_input;
  g2.split_k = d.split_k;
  set_b_scale(&g2, p.w2_scale, p.quant, p.w2_zp, p.group_size);
  int32_t k2 = 0;  // int4 on sm_90: act_and_mul writes GEMM2's input in that GEMM's dot order
  const auto activation = static_cast<int32_t>(p.activation);
  if (p.quant == QuantMode::kInt4W4A16)
    AOTRITON_RETURN_IF_ERROR(detail::wq_dot_order_k_tile(kOp, g2, stream, options, &k2));
  if (k2 && !detail::kernels::act_and_mul_dot_order::built_for({act, activation, k2}, 90)) k2 = 0;
  g2.x_dot_order = k2 > 0;

  // 3. cache2 = act(gate) * up (with block scales: quantized at once, in step 4).
  const bool fused_aq = fused_act_quant(p.quant, d.N, act);
  const bool fused_dq = fused_act_dynamic_quant(p, d, l, act);  // decode, dynamic per-tensor: in step 4 too
  if (!fused_aq && !fused_dq) {
    detail::PlainLaunchScope plain(!act_starts_early(d, k2 > 0));
    if (k2) {
      namespace k = detail::kernels::act_and_mul_dot_order;
      const k::Inputs in{.out_ptr = detail::strided(l.cache2, d.N), .in_ptr = detail::strided(l.cache13, 2 * d.N),
                         .n_rows = d.slots, .n_cols = d.N};
      AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{act, activation, k2}, stream, nullptr));
    } else {
      namespace k = detail::kernels::act_and_mul;
      const k::Inputs in{.out_ptr = detail::strided(l.cache2, d.N), .in_ptr = detail::strided(l.cache13, 2 * d.N),
                         .n_rows = d.slots, .n_cols = d.N};
      AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{act, activation}, stream, nullptr));
    }
  }

  // 4. GEMM2.
  if (!quantizes_activations(p.quant)) {
    g2.a = l.cache2;
    g2.stride_am = d.N;
  } else if (fused_aq) {
    AOTRITON_RETURN_IF_ERROR(launch_act_group_quant(p, d, l, act, &g2, stream));
  } else if (fused_dq) {
    // The scale must not see dropped slots' unwritten rows of GEMM1's output: the
    // amax step skips them (their q rows are never read: GEMM2 gathers kept slots only).
    g2.a = l.a2q;
    g2.stride_am = d.N;
    g2.a_scale = l.a2s;
    AOTRITON_RETURN_IF_ERROR(detail::launch_dynamic_quant_chunks(kOp, act_quant_job(l, d, act), l.partials, l.a2s,
                                                                 stream, static_cast<int32_t>(p.activation),
                                                                 {ids, emap, emap_len, d.E}));
  } else {
    // A dynamic per-tensor scale must not see the never-written rows of dropped slots.
    if (p.quant == QuantMode::kFp8PerTensor && d.dynamic_a2)
      AOTRITON_RETURN_IF_ERROR(detail::launch_zero_dropped_rows(kOp, l.cache2, act, d.slots, d.N, d.N, ids, emap,
                                                                  emap_len, d.E, stream));
    AOTRITON_RETURN_IF_ERROR(quantize_a(&g2, l.cache2, d.slots, d.N, d.N, act, p.quant, l.a2q, l.a2s,
                                        p.a2_scale.data, l.a2s, l.partials, stream));
  }
  // Dropped slots (expert map -1, ids out of range) are never written by GEMM2:
  // moe_sum skips their rows; with top-1 and no split they are output rows, zeroed first.
  if (direct)
    AOTRITON_RETURN_IF_ERROR(detail::launch_zero_dropped_rows(kOp, c2, act, d.slots, d.K, ldc2, ids, emap, emap_len,
                                                              d.E, stream));
  {
    detail::PlainLaunchScope plain(!gemms_start_early(d));
    AOTRITON_RETURN_IF_ERROR(detail::launch_gemm(kOp, g2, stream, options));
  }
  if (direct) return Status::kSuccess;

  // 5. output[m] = sum_k out_slot[m * topk + k] (with split-K: over the
  //    topk * split_k partial rows of token m), kept slots only.
  namespace k = detail::kernels::moe_sum;
  const int64_t rows = d.topk * d.split_k;
  const k::Inputs in{.out_ptr = detail::strided(p.output.data, p.output.stride(0)),
                     .in_ptr = detail::strided(c2, rows * d.K, d.K),  // [M, rows, K] contiguous
                     .topk_ids_ptr = ids, .expert_map_ptr = emap, .n_tokens = d.M, .topk = rows, .hidden = d.K,
                     .rows_per_slot = d.split_k, .num_experts = d.E, .expert_map_len = emap_len};
  return k::launch(in, k::Functional{act}, stream, nullptr);
}

}  // namespace

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
