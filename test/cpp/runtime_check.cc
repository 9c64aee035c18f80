// Runtime checks that need no GPU: version/build info, argument validation,
// and the error returned when the CUDA driver is absent. Prints one line per
// check as "name: <status name>: <message>" for test/cpu/test_runtime_nogpu.py.
#include <array>
#include <cstdio>
#include <cstring>

#include "aotriton/flash.h"
#include "aotriton/moe.h"
#include "aotriton/runtime.h"

using namespace aotriton;

namespace {

alignas(16) unsigned char g_fake[4096];  // host memory: never reached by a kernel in these checks
unsigned char* const g_out = g_fake;
unsigned char* const g_in = g_fake + 1024;  // inputs and outputs must not overlap

// Distinct fake device addresses 1 TiB apart, for views far larger than g_fake
// (only validated, never dereferenced).
void* addr(int k) { return reinterpret_cast<void*>(uintptr_t(k) << 40); }

TensorView<2> view2(DType dt, int64_t rows, int64_t cols, void* data = g_fake) {
  TensorView<2> v;
  v.data = data;
  v.sizes = {rows, cols};
  v.strides = {cols, 1};
  v.dtype = dt;
  return v;
}

void report(const char* name, Status s) {
  std::printf("%s: %s: %s\n", name, status_name(s), s == Status::kSuccess ? "" : last_error_message());
}

// A contiguous view of any rank over g_fake (sizes may be far larger than the
// buffer: validation never touches the data, and no kernel runs here).
template <int R>
TensorView<R> viewn(DType dt, std::array<int64_t, R> sizes, void* data) {
  TensorView<R> v;
  v.data = data;
  v.sizes = sizes;
  int64_t stride = 1;
  for (int i = R - 1; i >= 0; --i) {
    v.strides[i] = stride;
    if (i > 0) stride *= sizes[i];  // (the full product may overflow: not needed)
  }
  v.dtype = dt;
  return v;
}

// DeepSeek-like bf16 layer (E=256, top-8, hidden 7168, N=2048) with M tokens.
moe::FusedExpertsParams deepseek_layer(int64_t M) {
  moe::FusedExpertsParams p;
  p.hidden_states = viewn<2>(DType::kBFloat16, {M, 7168}, addr(50));
  p.w1 = viewn<3>(DType::kBFloat16, {256, 2 * 2048, 7168}, addr(51));
  p.w2 = viewn<3>(DType::kBFloat16, {256, 7168, 2048}, addr(52));
  p.topk_weights = viewn<2>(DType::kFloat32, {M, 8}, addr(53));
  p.topk_ids = viewn<2>(DType::kInt32, {M, 8}, addr(54));
  p.output = viewn<2>(DType::kBFloat16, {M, 7168}, addr(55));
  return p;
}

// Large M runs in passes of at most 36864 tokens here (37449 = 2^31 / (8 * 7168)):
// the workspace of any larger M is that of one full pass.
void report_large_m() {
  size_t one = 0, two = 0, many = 0, small = 0;
  Status s = moe::fused_experts_workspace_size(deepseek_layer(36864), &one);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(40000), &two);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(1000000), &many);
  if (s == Status::kSuccess) s = moe::fused_experts_workspace_size(deepseek_layer(4096), &small);
  std::printf("large_m_workspace: %s: one_pass=%zu two_passes=%zu many_passes=%zu small=%zu\n", status_name(s), one,
              two, many, small);
  moe::FusedExpertsParams p = deepseek_layer(40000);
  p.workspace = addr(56);
  p.workspace_bytes = two;
  report("large_m_call", moe::fused_experts(p, {}));  // valid: reaches the driver
  p = deepseek_layer(4096);  // one pass: its own workspace check
  p.workspace = addr(56);
  p.workspace_bytes = small - 1;
  report("one_pass_short_workspace", moe::fused_experts(p, {}));
  p.workspace_bytes = small;
  report("one_pass_call", moe::fused_experts(p, {}));  // valid: reaches the driver
  p = deepseek_layer(40);  // one token's slots x hidden size overflow int32: no pass size works
  const int64_t huge_k = int64_t{1} << 28;
  p.hidden_states = viewn<2>(DType::kBFloat16, {40, huge_k}, addr(50));
  p.output = viewn<2>(DType::kBFloat16, {40, huge_k}, addr(55));
  p.w1 = viewn<3>(DType::kBFloat16, {256, 2 * 2048, huge_k}, addr(51));
  p.w2 = viewn<3>(DType::kBFloat16, {256, huge_k, 2048}, addr(52));
  report("large_m_unsplittable", moe::fused_experts_workspace_size(p, &many));
}

// Sizes and offsets that overflow 64-bit products or the kernels' int32
// offsets: each must fail validation (before these checks they reached the
// driver, i.e. "CUDA driver not available" here).
void integer_checks() {
  {  // tokens * top-k wraps to 0 in int64 with M = 2^33, top-k = 2^31 (and M * K with K = 2^31)
    moe::FusedExpertsParams p;
    const int64_t M = int64_t(1) << 33, K = int64_t(1) << 31;
    p.hidden_states = viewn<2>(DType::kFloat16, {M, K}, addr(1));
    p.w1 = viewn<3>(DType::kFloat16, {1, 2, K}, addr(2));
    p.w2 = viewn<3>(DType::kFloat16, {1, K, 1}, addr(3));
    p.topk_weights = viewn<2>(DType::kFloat32, {M, int64_t(1) << 31}, addr(4));
    p.topk_ids = viewn<2>(DType::kInt32, {M, int64_t(1) << 31}, addr(5));
    p.output = viewn<2>(DType::kFloat16, {M, K}, addr(6));
    size_t bytes = 0;
    report("fused_experts_wrapping_sizes", moe::fused_experts_workspace_size(p, &bytes));
  }
  {  // debug dropout mask whose row stride makes (Sq - 1) * stride exceed int32
    flash::FwdParams p;
    const int64_t S = 4096;
    p.q = p.k = p.v = viewn<4>(DType::kFloat16, {1, S, 1, 64}, addr(7));  // inputs may share memory
    p.out = viewn<4>(DType::kFloat16, {1, S, 1, 64}, addr(41));
    p.lse = viewn<3>(DType::kFloat32, {1, 1, S}, addr(8));
    p.softmax_scale = 0.125f;
    static int64_t seed_and_offset[2];
    p.philox_seed = &seed_and_offset[0];
    p.philox_offset = &seed_and_offset[1];
    p.dropout_mask = viewn<4>(DType::kInt8, {1, 1, S, S}, addr(9));
    p.dropout_mask.strides = {1 << 30, 1 << 30, 1 << 20, 1};  // dims 0 and 1 have size 1
    report("dropout_mask_offset", flash::attn_fwd(p, {}));
  }
  {  // expert weights stored N-major ([N, E, K] permuted): (N - 1) * stride_bn exceeds int32
    moe::GroupedGemmParams p;
    p.a = viewn<2>(DType::kFloat16, {4, 64}, addr(10));
    p.b = viewn<3>(DType::kFloat16, {2, 64, 64}, addr(11));
    p.b.strides = {64, int64_t(1) << 26, 1};
    p.c = viewn<2>(DType::kFloat16, {4, 64}, addr(12));
    p.sorted_token_ids = viewn<1>(DType::kInt32, {64}, addr(13));
    p.expert_ids = viewn<1>(DType::kInt32, {4}, addr(14));
    p.num_tokens_post_padded = viewn<1>(DType::kInt32, {1}, addr(15));
    p.block_size = 16;
    report("weight_offset", moe::grouped_gemm(p, {}));
  }
  {  // column-major router logits: (experts - 1) * stride(1) exceeds int32
    moe::TopkSoftmaxParams p;
    const int64_t M = int64_t(1) << 23;
    p.logits = viewn<2>(DType::kFloat32, {M, 512}, addr(16));
    p.logits.strides = {1, M};
    p.topk_weights = viewn<2>(DType::kFloat32, {M, 2}, addr(17));
    p.topk_ids = viewn<2>(DType::kInt32, {M, 2}, addr(18));
    report("column_major_logits", moe::topk_softmax(p, {}));
  }
  {  // 2^30 + 256 slots, 512 experts: the align chunk counters exceed int32 offsets
    moe::MoeAlignParams p;
    const int64_t numel = (int64_t(1) << 30) + 256;
    p.topk_ids = viewn<2>(DType::kInt32, {numel, 1}, addr(19));
    p.num_experts = 512;
    p.block_size = 16;
    const int64_t padded = moe::moe_align_max_padded(numel, 512, 16);
    p.sorted_token_ids = viewn<1>(DType::kInt32, {padded}, addr(20));
    p.expert_ids = viewn<1>(DType::kInt32, {(padded + 15) / 16}, addr(21));
    p.num_tokens_post_padded = viewn<1>(DType::kInt32, {1}, addr(22));
    p.workspace = addr(40);
    p.workspace_bytes = moe::moe_align_workspace_size(numel, 512);
    report("align_chunk_counters", moe::moe_align_block_size(p, {}));
  }
}

}  // namespace

// Sliding window / softcap / ALiBi arguments, forward and backward: each bad
// value is refused on the host; the good call reaches the (absent) driver.
void flash_feature_checks() {
  const int64_t B = 2, S = 64, H = 4, D = 64;
  auto fwd = [&](auto&& tweak) {
    flash::FwdParams p;
    p.q = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(60));
    p.k = p.v = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(61));
    p.out = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(62));
    p.lse = viewn<3>(DType::kFloat32, {B, H, S}, addr(63));
    p.softmax_scale = 0.125f;
    tweak(p);
    return flash::attn_fwd(p, {});
  };
  auto slopes = [&](int64_t rows, int64_t cols, DType dt = DType::kFloat32) {
    return viewn<2>(dt, {rows, cols}, addr(64));
  };
  report("feature_window_below_minus_one", fwd([](auto& p) { p.features.window_left = -2; }));
  report("feature_softcap_negative", fwd([](auto& p) { p.features.softcap = -1.f; }));
  report("feature_alibi_shape", fwd([&](auto& p) { p.features.alibi_slopes = slopes(3, H); }));
  report("feature_alibi_dtype", fwd([&](auto& p) { p.features.alibi_slopes = slopes(1, H, DType::kFloat16); }));
  report("feature_softcap_and_alibi", fwd([&](auto& p) {
           p.features.softcap = 30.f;
           p.features.alibi_slopes = slopes(B, H);
         }));
  report("feature_fp32", fwd([](auto& p) {
           p.q.dtype = p.k.dtype = p.v.dtype = p.out.dtype = DType::kFloat32;
           p.features.window_left = 8;
         }));
  report("feature_dropout", fwd([](auto& p) {
           static int64_t philox[2];
           p.dropout_p = 0.1f, p.philox_seed = &philox[0], p.philox_offset = &philox[1];
           p.features.softcap = 30.f;
         }));
  report("feature_valid_call", fwd([&](auto& p) {
           p.causal = flash::CausalType::kTopLeft;
           p.features.window_left = 16;
           p.features.alibi_slopes = slopes(1, H);
         }));
  flash::BwdParams b;
  b.q = b.out = b.dout = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(65));
  b.k = b.v = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(66));
  b.dq = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(67));
  b.dk = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(68));
  b.dv = viewn<4>(DType::kFloat16, {B, S, H, D}, addr(69));
  b.lse = viewn<3>(DType::kFloat32, {B, H, S}, addr(70));
  b.delta = viewn<3>(DType::kFloat32, {B, H, S}, addr(71));
  b.softmax_scale = 0.125f;
  b.features.window_right = -3;
  report("feature_bwd_window", flash::attn_bwd(b, {}));
  b.features.window_right = 4;
  b.features.alibi_slopes = slopes(B, H + 1);
  report("feature_bwd_alibi_shape", flash::attn_bwd(b, {}));
}

int main() {
  std::printf("version: %s (header %s)\n", aotriton::version(), AOTRITON_VERSION_STRING);
  std::printf("profile: %s archs: %s kernels: %s\n", build_profile(), build_archs(), build_kernels());
  report("null_input", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), view2(DType::kFloat16, 4, 16, nullptr), {}));
  report("dtype_mismatch", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), view2(DType::kFloat32, 4, 16, g_in), {}));
  report("shape_mismatch", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), view2(DType::kFloat16, 4, 15, g_in), {}));
  report("unsupported_dtype", moe::silu_and_mul(view2(DType::kInt32, 4, 8, g_out), view2(DType::kInt32, 4, 16, g_in), {}));
  flash_feature_checks();
  TensorView<2> strided = view2(DType::kFloat16, 4, 16, g_in);
  strided.strides = {16, 2};
  report("inner_stride", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), strided, {}));
  report("misaligned", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out + 2), view2(DType::kFloat16, 4, 16, g_in), {}));
  TensorView<2> broadcast_out = view2(DType::kFloat16, 4, 8, g_out);
  broadcast_out.strides = {0, 1};  // four rows written to one
  report("zero_stride_output", moe::silu_and_mul(broadcast_out, view2(DType::kFloat16, 4, 16, g_in), {}));
  report("output_aliases_input",
         moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_in + 64), view2(DType::kFloat16, 4, 16, g_in), {}));
  // Valid arguments: reaches the driver (kNoDriver when AOTRITON_LIBCUDA points nowhere).
  report("valid_call", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), view2(DType::kFloat16, 4, 16, g_in), {}));
  std::printf("error_string: %s\n", error_string(Status::kNoDriver));
  // set_image_dir / image_dir start afresh: no stale message from the failed call above.
  report("before_set_image_dir", Status::kDriverError);
  const Status set = set_image_dir("/tmp");
  std::printf("after_set_image_dir: %s [%s]\n", status_name(set), last_error_message());
  set_image_dir(nullptr);
  report("before_image_dir", moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_out), view2(DType::kFloat16, 4, 16, g_in), {}));
  const char* dir = image_dir();
  std::printf("after_image_dir: %s [%s]\n", *dir ? "found" : "none", last_error_message());
  integer_checks();
  report_large_m();
  return 0;
}
