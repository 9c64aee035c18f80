// Runtime behaviour against the stand-in driver (test/cpp/fake_libcuda.cc,
// loaded through AOTRITON_LIBCUDA): context recreation, failed context
// pushes, module leaks, remembered store failures, and multi-kernel operators
// that must resolve every kernel before launching the first. Nothing runs on a
// device: tensors point at host memory the fake never touches. Prints
// "name: status | message | counters" lines for test/cpu/test_runtime_fake_driver.py.
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "aotriton/flash.h"
#include "aotriton/moe.h"
#include "aotriton/runtime.h"

using namespace aotriton;

namespace {

alignas(256) unsigned char g_mem[1 << 23];

// Offsets into g_mem for one call's tensors, each 256-byte aligned.
struct Bump {
  size_t off = 0;
  size_t take(size_t bytes) {
    const size_t at = off;
    off += (bytes + 255) / 256 * 256;
    return at;
  }
};

void (*recreate_context)(int);
void (*fail_call)(const char*, int);
void (*counts)(long[6]);

struct Counts {
  long loads, unloads, live, launches, get_function, push;
};
Counts now() {
  long c[6];
  counts(c);
  return {c[0], c[1], c[2], c[3], c[4], c[5]};
}

void report(const char* name, Status s, const Counts& before) {
  const Counts c = now();
  std::printf("%s: %s | %s | loads=%ld unloads=%ld live=%ld launches=%ld\n", name, status_name(s),
              s == Status::kSuccess ? "" : last_error_message(), c.loads - before.loads, c.unloads - before.unloads,
              c.live - before.live, c.launches - before.launches);
}

template <int R>
TensorView<R> view(DType dt, std::array<int64_t, R> sizes, size_t offset = 0) {
  TensorView<R> v;
  v.data = g_mem + offset;
  v.sizes = sizes;
  int64_t stride = 1;
  for (int i = R - 1; i >= 0; --i) v.strides[i] = stride, stride *= sizes[i];
  v.dtype = dt;
  return v;
}

Status silu(DType dt, void* stream = nullptr) {
  return moe::silu_and_mul(view<2>(dt, {4, 8}), view<2>(dt, {4, 16}, 4096), Stream{stream});
}

Status gelu(DType dt) {
  return moe::gelu_and_mul(view<2>(dt, {4, 8}), view<2>(dt, {4, 16}, 4096), Stream{});
}

void runtime_checks(const char* corrupt_dir, const char* corrupt_file, const char* good_file) {
  Counts c = now();
  report("first_call", silu(DType::kFloat16), c);
  c = now();
  report("second_call", silu(DType::kFloat16), c);
  // The context is destroyed and a new one gets the same handle.
  recreate_context(0);
  c = now();
  report("recreated_context", silu(DType::kFloat16), c);
  c = now();
  report("after_recreation", silu(DType::kFloat16), c);

  // Stream 0x2 belongs to the other context, which must be pushed; the push fails.
  fail_call("cuCtxPushCurrent", 1);
  c = now();
  report("push_fails", silu(DType::kBFloat16, reinterpret_cast<void*>(0x2)), c);
  fail_call("cuCtxPushCurrent", 0);
  c = now();
  report("push_ok", silu(DType::kBFloat16, reinterpret_cast<void*>(0x2)), c);

  // cuModuleGetFunction fails after the module loaded: nothing may leak.
  fail_call("cuModuleGetFunction", 1);
  c = now();
  Status s = Status::kSuccess;
  for (int i = 0; i < 1000; ++i) s = gelu(DType::kFloat16);
  report("get_function_fails_1000", s, c);
  fail_call("cuModuleGetFunction", 0);

  // A corrupt store: the failure is remembered (the fixed file is not read
  // again) until set_image_dir() is called.
  set_image_dir(corrupt_dir);
  c = now();
  report("corrupt_first", silu(DType::kFloat32), c);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) s = silu(DType::kFloat32);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("corrupt_1000_ms: %.3f\n", ms);
  if (std::rename(good_file, corrupt_file) != 0) std::perror("rename");
  c = now();
  report("corrupt_remembered", silu(DType::kFloat32), c);
  set_image_dir(corrupt_dir);
  c = now();
  report("corrupt_retried_after_set_image_dir", silu(DType::kFloat32), c);
}

// Without cuCtxGetId (FAKECUDA_NO_CTX_ID=1): the first launch after the
// context is recreated fails with a clear message, the next one reloads.
void fallback_checks() {
  Counts c = now();
  report("first_call", silu(DType::kFloat16), c);
  recreate_context(0);
  c = now();
  report("recreated_context", silu(DType::kFloat16), c);
  c = now();
  report("after_recreation", silu(DType::kFloat16), c);
}

flash::BwdParams bwd_params() {
  // B=1, S=16, H=1, D=64, fp16; lse/delta fp32 [1, 1, 16].
  flash::BwdParams p;
  const std::array<int64_t, 4> qs{1, 16, 1, 64};
  size_t off = 0;
  auto next4 = [&] {
    auto v = view<4>(DType::kFloat16, qs, off);
    off += 4096;
    return v;
  };
  p.q = next4(), p.k = next4(), p.v = next4(), p.out = next4(), p.dout = next4();
  p.dq = next4(), p.dk = next4(), p.dv = next4();
  p.lse = view<3>(DType::kFloat32, {1, 1, 16}, off);
  p.delta = view<3>(DType::kFloat32, {1, 1, 16}, off + 256);
  p.softmax_scale = 0.125f;
  return p;
}

moe::FusedExpertsParams fused_params(moe::QuantMode quant = moe::QuantMode::kNone, int64_t M = 4, int64_t E = 2) {
  // M tokens (4 by default), K=64, N=64, E experts (2 by default), top-2; fp16 (fp8 modes: fp8 weights,
  // 128x128 or per-expert scales, dynamic activation scales).
  moe::FusedExpertsParams p;
  const bool fp8 = quant != moe::QuantMode::kNone;
  Bump mem;
  auto take = [&](size_t bytes) { return mem.take(bytes); };
  p.hidden_states = view<2>(DType::kFloat16, {M, 64}, take(M * 64 * 2));
  const DType wt = fp8 ? DType::kFloat8E4M3 : DType::kFloat16;
  p.w1 = view<3>(wt, {E, 128, 64}, take(E * 128 * 64 * 2));
  p.w2 = view<3>(wt, {E, 64, 64}, take(E * 64 * 64 * 2));
  if (fp8) {
    p.quant = quant;
    p.w1_scale = view<3>(DType::kFloat32, {E, 1, 1}, take(E * 4));
    p.w2_scale = view<3>(DType::kFloat32, {E, 1, 1}, take(E * 4));
  }
  p.topk_weights = view<2>(DType::kFloat32, {M, 2}, take(M * 8));
  p.topk_ids = view<2>(DType::kInt32, {M, 2}, take(M * 8));
  p.output = view<2>(DType::kFloat16, {M, 64}, take(M * 64 * 2));
  size_t ws = 0;
  if (moe::fused_experts_workspace_size(p, &ws) != Status::kSuccess) std::printf("workspace: %s\n", last_error_message());
  p.workspace = g_mem + take(0);
  p.workspace_bytes = ws;
  if (mem.off + ws > sizeof g_mem) std::printf("workspace: too large for the test buffer (%zu)\n", ws);
  return p;
}

void resolve_first_checks(const char* dir_without_dq, const char* dir_without_moe_sum,
                          const char* dir_without_act_quant, const char* full_dir) {
  set_image_dir(dir_without_dq);
  Counts c = now();
  report("attn_bwd_missing_dq", flash::attn_bwd(bwd_params(), Stream{}), c);
  set_image_dir(dir_without_moe_sum);
  c = now();
  report("fused_experts_missing_moe_sum", moe::fused_experts(fused_params(), Stream{}), c);
  // 128x128 block scales: the activation and GEMM2's quantization are one kernel
  // (act_and_mul_group_quant_fp8): missing, nothing launches; present, the call is
  // six launches (align, quantize x, GEMM1, act + quantize, GEMM2, moe_sum: moe_sum skips dropped slots).
  set_image_dir(dir_without_act_quant);
  c = now();
  report("fused_experts_fp8_block_missing_act_quant",
         moe::fused_experts(fused_params(moe::QuantMode::kFp8Block), Stream{}), c);
  set_image_dir(full_dir);
  c = now();
  report("fused_experts_fp8_block", moe::fused_experts(fused_params(moe::QuantMode::kFp8Block), Stream{}), c);
  // Dynamic per-tensor scales at decode size: the activation runs inside the chunked
  // quantization of GEMM2's input (align, quantize x (two launches), GEMM1, act + quantize (two),
  // GEMM2, moe_sum: eight launches; the amax step and moe_sum skip dropped slots' rows).
  c = now();
  report("fused_experts_fp8_tensor_decode",
         moe::fused_experts(fused_params(moe::QuantMode::kFp8PerTensor), Stream{}), c);
  set_image_dir(full_dir);
  c = now();
  report("attn_bwd_complete", flash::attn_bwd(bwd_params(), Stream{}), c);
  {  // the window / softcap / ALiBi functionals are in the images and load like the others
    flash::BwdParams b = bwd_params();
    b.causal = flash::CausalType::kBottomRight;
    b.features.window_left = 4;
    b.features.alibi_slopes = view<2>(DType::kFloat32, {1, 1}, 64 * 4096);
    c = now();
    report("attn_bwd_window_alibi", flash::attn_bwd(b, Stream{}), c);
    flash::FwdParams f;
    f.q = b.q, f.k = b.k, f.v = b.v, f.out = b.dq, f.lse = b.delta;
    f.softmax_scale = 0.125f;
    f.features.softcap = 30.f;
    c = now();
    report("attn_fwd_softcap", flash::attn_fwd(f, Stream{}), c);
  }
  {  // v with its own head dim (q/k 128, v 64; causal bottom-right): the _vdim kernels
    size_t off = 96 * 4096;
    auto next = [&](int64_t d) {
      auto v = view<4>(DType::kFloat16, {1, 16, 1, d}, off);
      off += 8192;
      return v;
    };
    flash::BwdParams b;
    b.q = next(128), b.k = next(128), b.dq = next(128), b.dk = next(128);
    b.v = next(64), b.out = next(64), b.dout = next(64), b.dv = next(64);
    b.lse = view<3>(DType::kFloat32, {1, 1, 16}, off);
    b.delta = view<3>(DType::kFloat32, {1, 1, 16}, off + 256);
    b.softmax_scale = 0.125f;
    b.causal = flash::CausalType::kBottomRight;
    flash::FwdParams f;
    f.q = b.q, f.k = b.k, f.v = b.v, f.out = b.out, f.lse = b.lse;
    f.softmax_scale = 0.125f;
    f.causal = flash::CausalType::kBottomRight;
    c = now();
    report("attn_fwd_vdim", flash::attn_fwd(f, Stream{}), c);
    c = now();
    report("attn_bwd_vdim", flash::attn_bwd(b, Stream{}), c);
  }
  c = now();
  report("fused_experts_complete", moe::fused_experts(fused_params(), Stream{}), c);
}

// force_config / ran_config on the align and quant operators: the tuned
// config is reported, forcing it works, forcing an unknown one fails.
template <typename F>
void options_check(const char* name, F call) {
  const char* ran = nullptr;
  KernelOptions o;
  o.ran_config = &ran;
  Status s = call(&o);
  std::printf("%s_tuned: %s [%s]\n", name, status_name(s), ran ? ran : "(not written)");
  if (!ran) return;
  const std::string tuned = ran;
  ran = nullptr;
  o.force_config = tuned.c_str();
  s = call(&o);
  std::printf("%s_forced: %s [%s]\n", name, status_name(s), ran ? ran : "(not written)");
  o.force_config = "BLOCK=no_such_config";
  s = call(&o);
  std::printf("%s_bogus: %s [%s]\n", name, status_name(s), s == Status::kSuccess ? "" : last_error_message());
}

void options_checks() {
  options_check("align", [](const KernelOptions* o) {
    moe::MoeAlignParams p;
    p.topk_ids = view<2>(DType::kInt32, {4, 2}, 0);
    p.num_experts = 4;
    p.block_size = 16;
    const int64_t padded = moe::moe_align_max_padded(8, 4, 16);
    p.sorted_token_ids = view<1>(DType::kInt32, {padded}, 4096);
    p.expert_ids = view<1>(DType::kInt32, {(padded + 15) / 16}, 8192);
    p.num_tokens_post_padded = view<1>(DType::kInt32, {1}, 12288);
    return moe::moe_align_block_size(p, Stream{}, o);
  });
  options_check("group_quant", [](const KernelOptions* o) {
    moe::PerTokenGroupQuantParams p;
    p.x = view<2>(DType::kFloat16, {4, 128}, 0);
    p.q = view<2>(DType::kFloat8E4M3, {4, 128}, 4096);
    p.scales = view<2>(DType::kFloat32, {4, 1}, 8192);
    return moe::per_token_group_quant_fp8(p, Stream{}, o);
  });
  options_check("tensor_quant", [](const KernelOptions* o) {
    moe::PerTensorQuantParams p;
    p.x = view<2>(DType::kFloat16, {4, 128}, 0);
    p.q = view<2>(DType::kFloat8E4M3, {4, 128}, 4096);
    p.scale = view<1>(DType::kFloat32, {1}, 8192);
    return moe::per_tensor_quant_fp8(p, Stream{}, o);
  });
}

// force_config routes an operator with two kernels for one call by the
// generated has_config: a name of the sm_90 kernel goes to it (which, here,
// fails at its TMA encoding: the stand-in driver has no cuTensorMapEncodeTiled),
// any other name to the Triton kernel (which rejects an unknown name).
void forced_kernel_checks(const char* fwd_hopper_config, const char* moe_hopper_config) {
  auto forced = [](const char* name, const char* config, auto call) {
    KernelOptions o;
    o.force_config = config;
    Counts c = now();
    report(name, call(&o), c);
  };
  // fp16, batched: calls the Hopper kernel serves (the ci build has it for
  // D = 128, the Triton kernel for D = 64).
  size_t off = 0;
  auto fwd_params = [&](int64_t d) {
    flash::FwdParams f;
    auto next4 = [&] {
      auto v = view<4>(DType::kFloat16, {1, 16, 1, d}, off);
      off += 8192;
      return v;
    };
    f.q = next4(), f.k = next4(), f.v = next4(), f.out = next4();
    f.lse = view<3>(DType::kFloat32, {1, 1, 16}, off);
    off += 4096;
    f.softmax_scale = 0.125f;
    return f;
  };
  const flash::FwdParams f128 = fwd_params(128), f64 = fwd_params(64);
  auto fwd128 = [&](const KernelOptions* o) { return flash::attn_fwd(f128, Stream{}, o); };
  auto fwd64 = [&](const KernelOptions* o) { return flash::attn_fwd(f64, Stream{}, o); };
  forced("attn_fwd_forced_hopper", fwd_hopper_config, fwd128);
  forced("attn_fwd_forced_moe_hopper", moe_hopper_config, fwd64);
  forced("attn_fwd_forced_bogus", "BLOCK=no_such_config", fwd64);

  moe::GroupedGemmParams g;  // fp16, K = N = 64, block size 128: a call the Hopper GEMM serves
  g.a = view<2>(DType::kFloat16, {4, 64}, off);
  off += 4096;
  g.b = view<3>(DType::kFloat16, {2, 64, 64}, off);
  off += 2 * 64 * 64 * 2;
  g.c = view<2>(DType::kFloat16, {8, 64}, off);
  off += 8 * 64 * 2;
  const int64_t padded = moe::moe_align_max_padded(8, 2, 128);
  g.sorted_token_ids = view<1>(DType::kInt32, {padded}, off);
  off += (padded * 4 + 255) / 256 * 256;
  g.expert_ids = view<1>(DType::kInt32, {(padded + 127) / 128}, off);
  off += 256;
  g.num_tokens_post_padded = view<1>(DType::kInt32, {1}, off);
  g.top_k = 2;
  g.block_size = 128;
  auto gemm = [&](const KernelOptions* o) { return moe::grouped_gemm(g, Stream{}, o); };
  forced("grouped_gemm_forced_hopper", moe_hopper_config, gemm);
  forced("grouped_gemm_forced_fwd_hopper", fwd_hopper_config, gemm);
  forced("grouped_gemm_forced_bogus", "BLOCK=no_such_config", gemm);
}

// The automatic route of an fp8 grouped GEMM on sm_90 (moe_gemm_hopper.cc): the
// Gluon fp8 kernel from kMoeHopperFp8MinTokensPerExpert slots per expert (reached:
// it stops at its TMA encoding here), the Triton kernel with AOTRITON_MOE_HOPPER=0
// or fewer slots.
// moe_align's outputs for `slots` slots over E experts at this block size (fake addresses).
void align_outputs(moe::GroupedGemmParams* g, int64_t slots, int64_t E, int32_t top_k, int32_t block, Bump* mem) {
  const int64_t padded = moe::moe_align_max_padded(slots, E, block);
  g->sorted_token_ids = view<1>(DType::kInt32, {padded}, mem->take(padded * 4));
  g->expert_ids = view<1>(DType::kInt32, {(padded + block - 1) / block}, mem->take(padded));
  g->num_tokens_post_padded = view<1>(DType::kInt32, {1}, mem->take(4));
  g->top_k = top_k;
  g->block_size = block;
}

// A grouped GEMM call with the layout moe_gemm_hopper.cc serves (E 2, N 1024, K 128, top-2,
// block size 128), on fake addresses: fp8 per tensor with a bf16 output, or fp16.
void grouped_gemm_call(int64_t tokens, bool fp8, const char* name) {
  Bump mem;
  auto take = [&](size_t bytes) { return mem.take(bytes); };
  const int64_t E = 2, N = 1024, K = 128, top_k = 2, slots = tokens * top_k;
  const DType ab = fp8 ? DType::kFloat8E4M3 : DType::kFloat16, c = fp8 ? DType::kBFloat16 : DType::kFloat16;
  const int64_t ab_bytes = fp8 ? 1 : 2;
  moe::GroupedGemmParams g;
  g.a = view<2>(ab, {tokens, K}, take(tokens * K * ab_bytes));
  g.b = view<3>(ab, {E, N, K}, take(E * N * K * ab_bytes));
  g.c = view<2>(c, {slots, N}, take(slots * N * 2));
  if (fp8) {
    g.a_scale = view<2>(DType::kFloat32, {1, 1}, take(4));
    g.b_scale = view<3>(DType::kFloat32, {E, 1, 1}, take(4 * E));
    g.quant = moe::QuantMode::kFp8PerTensor;
  }
  align_outputs(&g, slots, E, top_k, 128, &mem);
  Counts counts = now();
  report(name, moe::grouped_gemm(g, Stream{}), counts);
}

// per_tensor_quant_fp8 with a dynamic scale: aligned x of at most kDynamicQuantMaxChunks
// row chunks takes the two chunked launches, more chunks the three (amax partials, scale,
// quantization); a workspace below per_tensor_quant_workspace_size fails before any launch.
void dynamic_quant_route_checks() {
  auto call = [](const char* name, int64_t rows, int64_t cols, size_t workspace_short) {
    moe::PerTensorQuantParams p;
    p.x = view<2>(DType::kFloat16, {rows, cols}, 0);
    p.q = view<2>(DType::kFloat8E4M3, {rows, cols}, 81920);
    p.scale = view<1>(DType::kFloat32, {1}, 131072);
    p.dynamic_scale = true;
    p.workspace = g_mem + 139264;
    p.workspace_bytes = moe::per_tensor_quant_workspace_size(rows) - workspace_short;
    Counts c = now();
    report(name, moe::per_tensor_quant_fp8(p, Stream{}), c);
  };
  call("dq_chunked", 4, 128, 0);        // 4 chunks
  call("dq_three_launches", 2049, 16, 0);  // 2049 chunks of one row each
  call("dq_short_workspace", 4, 128, 4);
}

void fp8_route_checks() {
  unsetenv("AOTRITON_MOE_HOPPER");
  grouped_gemm_call(128, true, "fp8_auto");  // 256 slots over 2 experts: 128 per expert
  grouped_gemm_call(64, true, "fp8_few_slots");  // 64 per expert
  setenv("AOTRITON_MOE_HOPPER", "0", 1);
  grouped_gemm_call(128, true, "fp8_opted_out");
  unsetenv("AOTRITON_MOE_HOPPER");
}

// One int4 w4a16 decode GEMM (block size 16, fp16): prints the call's report and the config
// that ran (fused_moe_gemm_wq_hopper's configs name PREFETCH, fused_moe_gemm_wq's INT4_DOT).
void wq_call(const char* name, int64_t group, bool with_zp = false) {
  Bump mem;
  auto take = [&](size_t bytes) { return mem.take(bytes); };
  const int64_t E = 2, N = 256, K = 256, top_k = 2, tokens = 1, slots = tokens * top_k;
  moe::GroupedGemmParams g;
  g.a = view<2>(DType::kFloat16, {tokens, K}, take(tokens * K * 2));
  g.b = view<3>(DType::kUInt8, {E, N, K / 2}, take(E * N * K / 2));
  g.c = view<2>(DType::kFloat16, {slots, N}, take(slots * N * 2));
  g.b_scale = view<3>(DType::kFloat32, {E, N, K / group}, take(4 * E * N * K / group));
  if (with_zp) g.b_zp = view<3>(DType::kUInt8, {E, N / 2, K / group}, take(E * N / 2 * K / group));
  g.quant = moe::QuantMode::kInt4W4A16;
  g.group_size = group;
  align_outputs(&g, slots, E, top_k, 16, &mem);
  const char* ran = nullptr;
  KernelOptions options;
  options.ran_config = &ran;
  Counts counts = now();
  report(name, moe::grouped_gemm(g, Stream{}, &options), counts);
  std::printf("%s_ran: %s\n", name, ran ? ran : "-");
}

// The sm_90 int4 kernel's route (moe_gemm.cc launch_gemm_wq_hopper): the default for group 128
// (K tiles of 128), off with AOTRITON_MOE_WQ_HOPPER=0; group 64 only with =1.
void wq_route_checks() {
  unsetenv("AOTRITON_MOE_WQ_HOPPER");
  wq_call("wq_default", 128);
  wq_call("wq_default_zp", 128, true);  // the HAS_ZP functional
  wq_call("wq_default_group64", 64);
  setenv("AOTRITON_MOE_WQ_HOPPER", "0", 1);
  wq_call("wq_opted_out", 128);
  setenv("AOTRITON_MOE_WQ_HOPPER", "1", 1);
  wq_call("wq_opted_in_group64", 64);
  unsetenv("AOTRITON_MOE_WQ_HOPPER");
}

// fused_experts int4 (fp16, group 128, M=1, top-2 of 2 experts, hidden and intermediate 128: no
// split): on sm_90 the hidden states are copied into the int4 kernel's dot order and act_and_mul
// writes GEMM2's input so (X_DOT_ORDER): one launch more than with AOTRITON_MOE_WQ_DOT_ORDER=0.
// Prints the call's programmatic launches too (act_and_mul_dot_order launches plainly).
void wq_fused_call(const char* name, long (*pdl_launches)()) {
  const int64_t M = 1, E = 2, K = 128, N = 128, group = 128;
  moe::FusedExpertsParams p;
  Bump mem;
  auto take = [&](size_t bytes) { return mem.take(bytes); };
  p.hidden_states = view<2>(DType::kFloat16, {M, K}, take(M * K * 2));
  p.w1 = view<3>(DType::kUInt8, {E, 2 * N, K / 2}, take(E * 2 * N * K / 2));
  p.w2 = view<3>(DType::kUInt8, {E, K, N / 2}, take(E * K * N / 2));
  p.w1_scale = view<3>(DType::kFloat32, {E, 2 * N, K / group}, take(4 * E * 2 * N * K / group));
  p.w2_scale = view<3>(DType::kFloat32, {E, K, N / group}, take(4 * E * K * N / group));
  p.quant = moe::QuantMode::kInt4W4A16;
  p.group_size = group;
  p.topk_weights = view<2>(DType::kFloat32, {M, 2}, take(M * 8));
  p.topk_ids = view<2>(DType::kInt32, {M, 2}, take(M * 8));
  p.output = view<2>(DType::kFloat16, {M, K}, take(M * K * 2));
  size_t ws = 0;
  if (moe::fused_experts_workspace_size(p, &ws) != Status::kSuccess) std::printf("workspace: %s\n", last_error_message());
  p.workspace = g_mem + take(0);
  p.workspace_bytes = ws;
  Counts c = now();
  const long before = pdl_launches();
  report(name, moe::fused_experts(p, Stream{}), c);
  std::printf("%s_pdl_launches: %ld\n", name, pdl_launches() - before);
}

void wq_fused_route_checks(long (*pdl_launches)()) {
  unsetenv("AOTRITON_MOE_WQ_DOT_ORDER");
  wq_fused_call("wq_fused_dot_order", pdl_launches);
  setenv("AOTRITON_MOE_WQ_DOT_ORDER", "0", 1);
  wq_fused_call("wq_fused_plain", pdl_launches);
  unsetenv("AOTRITON_MOE_WQ_DOT_ORDER");
}

// The fp16/bf16 route on an sm_90 stand-in with AOTRITON_MOE_HOPPER=1: from
// kMoeHopperPersistentMinTokensPerExpert slots per expert the persistent Gluon kernel,
// below it the per-tile one (both stop at their TMA encoding: the stand-in has none).
void persistent_route_checks() {
  setenv("AOTRITON_MOE_HOPPER", "1", 1);
  grouped_gemm_call(512, false, "persistent");  // 1024 slots over 2 experts: 512 per expert
  grouped_gemm_call(256, false, "per_tile");    // 256 per expert
  unsetenv("AOTRITON_MOE_HOPPER");
  grouped_gemm_call(512, false, "default");     // the default: as with "1"
  setenv("AOTRITON_MOE_HOPPER", "0", 1);
  grouped_gemm_call(512, false, "opted_out");   // the Triton kernel
  unsetenv("AOTRITON_MOE_HOPPER");
}

}  // namespace

// Programmatic dependent launch (AOTRITON_PDL from the test, then the API flips
// it): kernels with pdl in their rule go through cuLaunchKernelEx on sm_90 when it
// is on, plainly on sm_80 (their cubins there have no griddepcontrol.wait) and
// when the driver refuses it.
void pdl_checks(long (*pdl_launches)()) {
  Counts c = now();
  long before = pdl_launches();
  report("silu", silu(DType::kFloat16), c);
  std::printf("silu_pdl_launches: %ld\n", pdl_launches() - before);
  set_programmatic_dependent_launch(!programmatic_dependent_launch());  // the API overrides the environment
  c = now();
  before = pdl_launches();
  report("silu_toggled", silu(DType::kFloat16), c);
  std::printf("silu_toggled_pdl_launches: %ld\n", pdl_launches() - before);
  set_programmatic_dependent_launch(true);
  // fused_experts' GEMMs start early only below 16 slots an expert (moe_fused.cc
  // gemms_start_early): 4 tokens top-2 over 2 experts is 4 an expert, 16 tokens 16.
  for (int64_t M : {4, 16}) {
    const std::string name = "fused_experts_m" + std::to_string(M);
    c = now();
    before = pdl_launches();
    report(name.c_str(), moe::fused_experts(fused_params(moe::QuantMode::kNone, M), Stream{}), c);
    std::printf("%s_pdl_launches: %ld\n", name.c_str(), pdl_launches() - before);
  }
  // act_and_mul launches plainly below one slot per 16 experts (moe_fused.cc act_starts_early):
  // one token top-2 over 256 experts; the GEMMs still start early.
  c = now();
  before = pdl_launches();
  report("fused_experts_e256_m1", moe::fused_experts(fused_params(moe::QuantMode::kNone, 1, 256), Stream{}), c);
  std::printf("fused_experts_e256_m1_pdl_launches: %ld\n", pdl_launches() - before);
  // attn_decode with two splits: the attention may start early, its combine launches plainly
  // (flash_decode.cc). One query, 4 q heads over 1 kv head, 256 cached keys of 128, fp16.
  flash::DecodeParams d;
  Bump mem;
  d.q = view<4>(DType::kFloat16, {1, 1, 4, 128}, mem.take(4 * 128 * 2));
  d.k_cache = view<4>(DType::kFloat16, {1, 256, 1, 128}, mem.take(256 * 128 * 2));
  d.v_cache = view<4>(DType::kFloat16, {1, 256, 1, 128}, mem.take(256 * 128 * 2));
  d.cache_seqlens = view<1>(DType::kInt32, {1}, mem.take(4));
  d.out = view<4>(DType::kFloat16, {1, 1, 4, 128}, mem.take(4 * 128 * 2));
  d.lse = view<3>(DType::kFloat32, {1, 4, 1}, mem.take(16));
  d.softmax_scale = 0.125f;
  d.num_splits = 2;
  size_t ws = 0;
  if (flash::attn_decode_workspace_size(d, &ws) != Status::kSuccess) std::printf("decode: %s\n", last_error_message());
  d.workspace = g_mem + mem.take(ws);
  d.workspace_bytes = ws;
  c = now();
  before = pdl_launches();
  report("attn_decode_split", flash::attn_decode(d, Stream{}), c);
  std::printf("attn_decode_split_pdl_launches: %ld\n", pdl_launches() - before);
}

int main(int argc, char** argv) {
  const char* lib = std::getenv("AOTRITON_LIBCUDA");
  void* h = lib ? dlopen(lib, RTLD_NOW | RTLD_LOCAL) : nullptr;
  if (!h) {
    std::fprintf(stderr, "set AOTRITON_LIBCUDA to the stand-in driver (libfakecuda.so)\n");
    return 2;
  }
  recreate_context = reinterpret_cast<void (*)(int)>(dlsym(h, "fakecuda_recreate_context"));
  fail_call = reinterpret_cast<void (*)(const char*, int)>(dlsym(h, "fakecuda_fail"));
  counts = reinterpret_cast<void (*)(long[6])>(dlsym(h, "fakecuda_counts"));
  if (!recreate_context || !fail_call || !counts) {
    std::fprintf(stderr, "%s is not the stand-in driver\n", lib);
    return 2;
  }
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "runtime" && argc == 5) runtime_checks(argv[2], argv[3], argv[4]);
  else if (mode == "fallback") fallback_checks();
  else if (mode == "one_silu") {
    Counts c = now();
    report("silu", silu(DType::kFloat16), c);
  }
  else if (mode == "options") options_checks();
  else if (mode == "forced_kernel" && argc == 4) forced_kernel_checks(argv[2], argv[3]);
  else if (mode == "fp8_route") fp8_route_checks();
  else if (mode == "dynamic_quant_route") dynamic_quant_route_checks();
  else if (mode == "persistent_route") persistent_route_checks();
  else if (mode == "wq_route") wq_route_checks();
  else if (mode == "wq_fused_route") {
    auto pdl_launches = reinterpret_cast<long (*)()>(dlsym(h, "fakecuda_pdl_launches"));
    if (!pdl_launches) return 2;
    wq_fused_route_checks(pdl_launches);
  }
  else if (mode == "resolve_first" && argc == 6) resolve_first_checks(argv[2], argv[3], argv[4], argv[5]);
  else if (mode == "pdl") {
    auto pdl_launches = reinterpret_cast<long (*)()>(dlsym(h, "fakecuda_pdl_launches"));
    if (!pdl_launches) return 2;
    pdl_checks(pdl_launches);
  }
  else {
    std::fprintf(stderr, "usage: runtime_fake_check runtime CORRUPT_DIR CORRUPT_FILE GOOD_FILE | fallback |"
                         " resolve_first DIR_WITHOUT_DQ DIR_WITHOUT_MOE_SUM DIR_WITHOUT_ACT_QUANT FULL_DIR | forced_kernel FWD_HOPPER_CONFIG"
                         " MOE_HOPPER_CONFIG | fp8_route | dynamic_quant_route | persistent_route | wq_route | pdl | one_silu\n");
    return 2;
  }
  return 0;
}
