// fused_experts_backward: align -> GEMM1 (recomputed) -> dgrad of GEMM2 ->
// act_and_mul backward (+ routing weights' gradient) -> wgrad of w2 and w1 ->
// dgrad of GEMM1 -> moe_sum, on one stream, in a caller workspace.
// Kernels: tritonsrc/moe/grouped_gemm_bwd.py, activation_bwd.py; the JIT
// twin of this sequence is python/jit/moe_bwd.py.
#include <algorithm>
#include <array>
#include <string>

#include "act_and_mul_bwd.h"
#include "moe_dgrad.h"
#include "moe_internal.h"
#include "moe_sum.h"
#include "moe_wgrad.h"
#include "resolve_first.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {

using detail::check_dtype;
using detail::check_i32;
using detail::check_same_dim;
using detail::check_tensor;
using detail::fail;
using detail::aligned16;
using detail::cdiv;
using detail::is_contiguous;

namespace {

constexpr const char* kOp = "fused_experts_backward";
constexpr int32_t kBlockM = 64;       // python/rules_moe.py BWD_BLOCK_SIZE_M
constexpr int32_t kScanBlock = 1024;  // moe_wgrad SCAN_BLOCK

struct Dims {
  int64_t M, K, N, E, topk, slots;
};

struct Layout {
  int32_t *sorted, *expert_ids, *ntpp;
  void* align_ws;
  void* h;    // GEMM1 output [slots, 2N], then its gradient (in place)
  void* g;    // gradient of the GEMM2 input before the routing weight [slots, N]
  void* a;    // act_and_mul output [slots, N]
  void* dxs;  // per-slot input gradient [slots, K] (top-k > 1)
  size_t bytes;
};

Layout layout(void* base, const Dims& d, DType dt) {
  detail::Carver c(base);
  Layout l{};
  const int64_t max_padded = moe_align_max_padded(d.slots, d.E, kBlockM);
  l.sorted = c.take<int32_t>(max_padded);
  l.expert_ids = c.take<int32_t>(cdiv(max_padded, kBlockM));
  l.ntpp = c.take<int32_t>(1);
  l.align_ws = c.take_bytes(static_cast<int64_t>(moe_align_workspace_size(d.slots, d.E)));
  const int64_t es = dtype_size(dt);
  l.h = c.take_bytes(d.slots * 2 * d.N * es);
  l.g = c.take_bytes(d.slots * d.N * es);
  l.a = c.take_bytes(d.slots * d.N * es);
  if (d.topk > 1) l.dxs = c.take_bytes(d.slots * d.K * es);
  l.bytes = c.size();
  return l;
}

Status fail_arg(const std::string& what) { return fail(Status::kInvalidArgument, std::string(kOp) + ": " + what); }

template <int R>
Status check_shape(const char* name, const TensorView<R>& t, std::array<int64_t, R> want) {
  for (int i = 0; i < R; ++i)
    if (t.size(i) != want[i])
      return fail_arg(std::string(name) + " has shape " + detail::shape_string(t.sizes.data(), R) + ", expected " +
                      detail::shape_string(want.data(), R));
  return Status::kSuccess;
}

Status validate(const FusedExpertsBackwardParams& p, Dims* d) {
  const char* op = kOp;
  for (auto [name, t] : {std::pair{"grad_output", &p.grad_output}, {"hidden_states", &p.hidden_states},
                         {"topk_weights", &p.topk_weights}, {"topk_ids", &p.topk_ids},
                         {"grad_hidden_states", &p.grad_hidden_states}, {"grad_topk_weights", &p.grad_topk_weights}})
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, *t));
  for (auto [name, t] : {std::pair{"w1", &p.w1}, {"w2", &p.w2}, {"grad_w1", &p.grad_w1}, {"grad_w2", &p.grad_w2}})
    AOTRITON_RETURN_IF_ERROR(check_tensor(op, name, *t));
  const DType dt = p.hidden_states.dtype;
  if (dt != DType::kFloat16 && dt != DType::kBFloat16)
    return fail_arg(std::string("hidden_states is ") + dtype_name(dt) + ", expected fp16 or bf16 (fp8 has no backward)");
  for (auto [name, got] : {std::pair{"grad_output", p.grad_output.dtype}, {"w1", p.w1.dtype}, {"w2", p.w2.dtype},
                           {"grad_hidden_states", p.grad_hidden_states.dtype}, {"grad_w1", p.grad_w1.dtype},
                           {"grad_w2", p.grad_w2.dtype}})
    AOTRITON_RETURN_IF_ERROR(check_dtype(op, name, got, dt));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_weights", p.topk_weights.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "grad_topk_weights", p.grad_topk_weights.dtype, DType::kFloat32));
  AOTRITON_RETURN_IF_ERROR(check_dtype(op, "topk_ids", p.topk_ids.dtype, DType::kInt32));
  d->M = p.hidden_states.size(0);
  d->K = p.hidden_states.size(1);
  d->E = p.w1.size(0);
  d->topk = p.topk_ids.size(1);
  if (p.w1.size(1) % 2 != 0) return fail_arg("w1.size(1) = " + std::to_string(p.w1.size(1)) + " must be even (2N)");
  d->N = p.w1.size(1) / 2;
  if (d->E < 1 || d->E > detail::kMaxExperts)
    return fail(Status::kUnsupported, std::string(op) + ": w1.size(0) (experts) = " + std::to_string(d->E) +
                                          " must be in [1, 512]");
  if (d->topk < 1) return fail_arg("topk_ids.size(1) (top-k) must be >= 1");
  if (d->K < 1 || d->N < 1) return fail_arg("hidden size and w1.size(1) must be positive");
  AOTRITON_RETURN_IF_ERROR(check_shape<3>("w1", p.w1, {d->E, 2 * d->N, d->K}));
  AOTRITON_RETURN_IF_ERROR(check_shape<3>("w2", p.w2, {d->E, d->K, d->N}));
  AOTRITON_RETURN_IF_ERROR(check_shape<3>("grad_w1", p.grad_w1, {d->E, 2 * d->N, d->K}));
  AOTRITON_RETURN_IF_ERROR(check_shape<3>("grad_w2", p.grad_w2, {d->E, d->K, d->N}));
  AOTRITON_RETURN_IF_ERROR(check_shape<2>("grad_output", p.grad_output, {d->M, d->K}));
  AOTRITON_RETURN_IF_ERROR(check_shape<2>("grad_hidden_states", p.grad_hidden_states, {d->M, d->K}));
  AOTRITON_RETURN_IF_ERROR(check_shape<2>("topk_weights", p.topk_weights, {d->M, d->topk}));
  AOTRITON_RETURN_IF_ERROR(check_shape<2>("grad_topk_weights", p.grad_topk_weights, {d->M, d->topk}));
  AOTRITON_RETURN_IF_ERROR(check_shape<2>("topk_ids", p.topk_ids, {d->M, d->topk}));
  for (auto [name, ok] : {std::pair{"topk_ids", is_contiguous(p.topk_ids)},
                          {"topk_weights", is_contiguous(p.topk_weights)},
                          {"grad_topk_weights", is_contiguous(p.grad_topk_weights)}})
    if (!ok) return fail_arg(std::string(name) + " must be contiguous");
  if (!aligned16(p.grad_hidden_states.data)) return fail_arg("grad_hidden_states must be 16-byte aligned");
  int64_t cache = 0, weights = 0;
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "tokens * top-k", {d->M, d->topk}, &d->slots));
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "tokens * top-k * max(2N, K)",
                                               {d->slots, std::max(2 * d->N, d->K)}, &cache));
  // The kernels offset experts in 64 bits; one expert's weights take int32 strides.
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(op, "2N * K (one expert's w1)", {2 * d->N, d->K}, &weights));
  for (auto [what, v] : {std::pair{"tokens * top-k (padded)", moe_align_max_padded(d->slots, d->E, kBlockM)},
                         {"tokens * top-k * max(2N, K)", cache}, {"2N * K (one expert's w1)", weights},
                         {"w1.stride(0)", p.w1.stride(0)}, {"w2.stride(0)", p.w2.stride(0)},
                         {"grad_w1.stride(0)", p.grad_w1.stride(0)}, {"grad_w2.stride(0)", p.grad_w2.stride(0)},
                         {"grad_output.stride(0)", p.grad_output.stride(0)},
                         {"hidden_states.stride(0)", p.hidden_states.stride(0)},
                         {"grad_hidden_states.stride(0)", p.grad_hidden_states.stride(0)}})
    AOTRITON_RETURN_IF_ERROR(check_i32(op, what, v));
  // Offsets within an expert the GEMMs step through in int32 (moe_dgrad adds
  // BLOCK_SIZE_K * row stride per K tile; the forward GEMM checks the same of w1).
  AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "w1 offset within an expert, (2N - 1) * w1.stride(1) + K",
                                                    2 * d->N, p.w1.stride(1), d->K));
  AOTRITON_RETURN_IF_ERROR(detail::check_i32_offset(op, "w2 offset within an expert, (K - 1) * w2.stride(1) + N",
                                                    d->K, p.w2.stride(1), d->N));
  if (p.activation == Activation::kSwigluOai)
    return fail(Status::kUnsupported, std::string(kOp) + ": the swigluoai activation has no backward here "
                                                         "(silu, gelu and gelu_tanh have)");
  if (p.activation != Activation::kSilu && p.activation != Activation::kGelu && p.activation != Activation::kGeluTanh)
    return fail_arg("unknown activation " + std::to_string(static_cast<int32_t>(p.activation)));
  return Status::kSuccess;
}

bool all16(std::initializer_list<int64_t> values, std::initializer_list<const void*> ptrs) {
  for (int64_t v : values)
    if (v % 16 != 0) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

// c[slot] = a[slot / top_k] @ b[e] with b [E, K, N] (N contiguous, row stride ldb).
Status dgrad(const Layout& l, const Dims& d, DType dt, const void* a, int64_t lda, int64_t top_k, const void* b,
             int64_t stride_be, int64_t ldb, int64_t K, int64_t N, void* c, int64_t ldc, Stream stream,
             const KernelOptions* options) {
  namespace k = detail::kernels::moe_dgrad;
  const int64_t EM = moe_align_max_padded(d.slots, d.E, kBlockM);
  const k::Inputs in{.a_ptr = detail::strided(a, lda), .b_ptr = detail::strided(b, stride_be, ldb),
                     .c_ptr = detail::strided(c, ldc), .sorted_token_ids_ptr = l.sorted,
                     .expert_ids_ptr = l.expert_ids, .num_tokens_post_padded_ptr = l.ntpp,
                     .N = N, .K = K, .EM = EM, .num_valid_tokens = d.slots, .top_k = top_k, .num_experts = d.E};
  k::Functional f{dt, all16({K, N, lda, stride_be, ldb, ldc}, {a, b, c}), kBlockM};
  return k::launch(in, f, stream, options);
}

// dw[e] = sum over e's slots s of (dy[s / top_k_dy] (* w[s]))^T x[s / top_k_x]; dw [E, N, K].
Status wgrad(const Layout& l, const Dims& d, DType dt, const void* dy, int64_t lddy, int64_t top_k_dy, const void* x,
             int64_t ldx, int64_t top_k_x, const float* w, const TensorView<3>& dw, Stream stream,
             const KernelOptions* options) {
  namespace k = detail::kernels::moe_wgrad;
  const int64_t N = dw.size(1), K = dw.size(2);
  const k::Inputs in{.dy_ptr = detail::strided(dy, lddy), .x_ptr = detail::strided(x, ldx),
                     .dw_ptr = detail::strided(dw.data, dw.stride(0), dw.stride(1)), .topk_weights_ptr = w,
                     .sorted_token_ids_ptr = l.sorted, .expert_ids_ptr = l.expert_ids,
                     .num_tokens_post_padded_ptr = l.ntpp, .N = N, .K = K, .num_valid_tokens = d.slots,
                     .top_k_dy = top_k_dy, .top_k_x = top_k_x, .num_experts = d.E};
  k::Functional f{dt, w != nullptr, all16({K, N, lddy, ldx, dw.stride(0), dw.stride(1)}, {dy, x, dw.data}), kBlockM,
                  kScanBlock};
  return k::launch(in, f, stream, options);
}

Status launch_all(const FusedExpertsBackwardParams& p, const Dims& d, Stream stream, const KernelOptions* options) {
  const DType dt = p.hidden_states.dtype;
  const Layout l = layout(p.workspace, d, dt);
  const auto* ids = static_cast<const int32_t*>(p.topk_ids.data);
  const auto* w = static_cast<const float*>(p.topk_weights.data);

  // 1. Slots grouped by expert (ids outside [0, E) are dropped).
  detail::AlignJob aj{ids, nullptr, d.slots, d.E, kBlockM, l.sorted, l.expert_ids, l.ntpp, l.align_ws, 0};
  AOTRITON_RETURN_IF_ERROR(detail::launch_align(kOp, aj, stream));

  // 2. h[slot] = x[slot / topk] @ w1[e]^T (the forward's GEMM1, recomputed).
  //    Dropped slots are never written by the GEMMs: zero them in h and g.
  AOTRITON_RETURN_IF_ERROR(
      detail::launch_zero_dropped_rows(kOp, l.h, dt, d.slots, 2 * d.N, 2 * d.N, ids, nullptr, 0, d.E, stream));
  detail::GemmJob g1{};
  g1.a = p.hidden_states.data;
  g1.b = p.w1.data;
  g1.c = l.h;
  g1.sorted_token_ids = l.sorted;
  g1.expert_ids = l.expert_ids;
  g1.num_tokens_post_padded = l.ntpp;
  g1.N = 2 * d.N;
  g1.K = d.K;
  g1.EM = moe_align_max_padded(d.slots, d.E, kBlockM);
  g1.num_valid_tokens = d.slots;
  g1.top_k = d.topk;
  g1.num_experts = d.E;
  g1.stride_am = p.hidden_states.stride(0);
  g1.stride_be = p.w1.stride(0);
  g1.stride_bn = p.w1.stride(1);
  g1.stride_cm = 2 * d.N;
  g1.ab_dtype = g1.c_dtype = dt;
  g1.quant = QuantMode::kNone;
  g1.block_size = kBlockM;
  AOTRITON_RETURN_IF_ERROR(detail::launch_gemm(kOp, g1, stream, nullptr));

  // 3. g[slot] = dout[slot / topk] @ w2[e] (the routing weight is applied in step 4).
  AOTRITON_RETURN_IF_ERROR(
      detail::launch_zero_dropped_rows(kOp, l.g, dt, d.slots, d.N, d.N, ids, nullptr, 0, d.E, stream));
  AOTRITON_RETURN_IF_ERROR(dgrad(l, d, dt, p.grad_output.data, p.grad_output.stride(0), d.topk, p.w2.data,
                                 p.w2.stride(0), p.w2.stride(1), d.K, d.N, l.g, d.N, stream, options));

  // 4. dh (in place over h), a = act(gate) * up, grad_topk_weights[slot] = <a, g>.
  {
    namespace k = detail::kernels::act_and_mul_bwd;
    using detail::strided;
    const k::Inputs in{.h_ptr = strided(l.h, 2 * d.N), .g_ptr = strided(l.g, d.N), .w_ptr = w,
                       .dh_ptr = strided(l.h, 2 * d.N), .a_ptr = strided(l.a, d.N),
                       .dw_ptr = p.grad_topk_weights.data, .n_rows = d.slots, .n_cols = d.N};
    AOTRITON_RETURN_IF_ERROR(k::launch(in, k::Functional{dt, static_cast<int32_t>(p.activation)}, stream, nullptr));
  }

  // 5. grad_w2[e] = sum_s (w[s] dout[s / topk])^T a[s];  grad_w1[e] = sum_s dh[s]^T x[s / topk].
  AOTRITON_RETURN_IF_ERROR(wgrad(l, d, dt, p.grad_output.data, p.grad_output.stride(0), d.topk, l.a, d.N, 1, w,
                                 p.grad_w2, stream, options));
  AOTRITON_RETURN_IF_ERROR(wgrad(l, d, dt, l.h, 2 * d.N, 1, p.hidden_states.data, p.hidden_states.stride(0), d.topk,
                                 nullptr, p.grad_w1, stream, options));

  // 6. grad_x[m] = sum_k dh[m * topk + k] @ w1[e]; with top-1 the slot rows are the rows.
  const bool direct = d.topk == 1;
  void* c = direct ? p.grad_hidden_states.data : l.dxs;
  const int64_t ldc = direct ? p.grad_hidden_states.stride(0) : d.K;
  AOTRITON_RETURN_IF_ERROR(
      detail::launch_zero_dropped_rows(kOp, c, dt, d.slots, d.K, ldc, ids, nullptr, 0, d.E, stream));
  AOTRITON_RETURN_IF_ERROR(dgrad(l, d, dt, l.h, 2 * d.N, 1, p.w1.data, p.w1.stride(0), p.w1.stride(1), 2 * d.N, d.K,
                                 c, ldc, stream, options));
  if (direct) return Status::kSuccess;
  namespace k = detail::kernels::moe_sum;
  const k::Inputs in{.out_ptr = detail::strided(p.grad_hidden_states.data, p.grad_hidden_states.stride(0)),
                     .in_ptr = detail::strided(l.dxs, d.topk * d.K, d.K), .topk_ids_ptr = nullptr,
                     .expert_map_ptr = nullptr, .n_tokens = d.M, .topk = d.topk, .hidden = d.K,
                     .rows_per_slot = 0, .num_experts = 0, .expert_map_len = 0};  // dropped rows zeroed above
  return k::launch(in, k::Functional{dt}, stream, nullptr);
}

}  // namespace

Status fused_experts_backward_workspace_size(const FusedExpertsBackwardParams& p, size_t* bytes) noexcept try {
  detail::clear_error();
  if (!bytes) return fail_arg("bytes is a null pointer");
  Dims d{};
  AOTRITON_RETURN_IF_ERROR(validate(p, &d));
  *bytes = layout(nullptr, d, p.hidden_states.dtype).bytes;
  return Status::kSuccess;
} catch (...) {
  return detail::fail_exception("fused_experts_backward_workspace_size: unexpected exception");
}

Status fused_experts_backward(const FusedExpertsBackwardParams& p, Stream stream,
                              const KernelOptions* options) noexcept try {
  detail::clear_error();
  Dims d{};
  AOTRITON_RETURN_IF_ERROR(validate(p, &d));
  const size_t need = layout(nullptr, d, p.hidden_states.dtype).bytes;
  AOTRITON_RETURN_IF_ERROR(detail::check_workspace(kOp, p.workspace, p.workspace_bytes, need));
  for (auto [name, t] : {std::pair{"grad_hidden_states", &p.grad_hidden_states}})
    AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, name, *t));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "grad_w1", p.grad_w1));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "grad_w2", p.grad_w2));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      kOp,
      {detail::span_of("grad_hidden_states", p.grad_hidden_states), detail::span_of("grad_w1", p.grad_w1),
       detail::span_of("grad_w2", p.grad_w2), detail::span_of("grad_topk_weights", p.grad_topk_weights),
       detail::bytes_of("workspace", p.workspace, need)},
      {detail::span_of("grad_output", p.grad_output), detail::span_of("hidden_states", p.hidden_states),
       detail::span_of("w1", p.w1), detail::span_of("w2", p.w2), detail::span_of("topk_weights", p.topk_weights),
       detail::span_of("topk_ids", p.topk_ids)}));
  if (d.M == 0) {
    // No tokens: the weight gradients are zero; written by the kernels below is
    // not possible without slots, so refuse rather than leave them unwritten.
    return fail_arg("no tokens (hidden_states.size(0) == 0): nothing to differentiate");
  }
  return detail::resolve_then_launch([&] { return launch_all(p, d, stream, options); });
} catch (...) {
  return detail::fail_exception("fused_experts_backward: unexpected exception");
}

}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
