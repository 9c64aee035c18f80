// Attention over a KV cache: argument checks, the split-KV choice, the
// workspace layout, and the launches (kv_append, attn_decode, combine).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "aotriton/flash.h"
#include "aotriton_tables.h"
#include "attn_decode.h"
#include "attn_decode_combine.h"
#include "kv_append.h"
#include "plain_launch.h"
#include "resolve_first.h"
#include "tensor_checks.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {

namespace {

using detail::fail;
constexpr const char* kOp = "attn_decode";
constexpr int32_t kMaxSplits = 128;
constexpr int32_t kDefaultSms = 132;  // H200
constexpr int64_t kKeysPerSplitMin = 256;  // below this a split's prologue/combine costs more than it saves

// Everything the launches need, derived once from the params.
struct Decode {
  int64_t B = 0, sq = 0, hq = 0, hk = 0, d = 0, snew = 0;
  int64_t capacity = 0, page_size = 16, num_blocks = 0;
  bool paged = false;
  int32_t page_tiles = 0;  // PAGE_TILES: 0 a page lookup per key, 1 per tile, 2 whole pages per tile
  int32_t splits = 1;
  int32_t bucket = 64;
  int32_t score_mod = 0;  // 0 none, 1 softcap, 2 ALiBi
};

std::string str(int64_t v) { return std::to_string(v); }

Status check_strides_i32(const char* name, const TensorView<4>& t) {
  for (int i = 0; i < 3; ++i) AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, name, t.stride(i)));
  return Status::kSuccess;
}

// The kernels address a token and head of one sequence with 32-bit offsets
// (tritonsrc/flash/decode.py, kv_append.py, decode_combine.py; only the batch
// offset is 64-bit): the farthest element of a sequence, the sum of
// (size - 1) * stride over the dims after the batch's plus the last size, must fit.
template <int R>
Status check_sequence_i32(const char* name, const TensorView<R>& t) {
  int64_t reach = t.size(R - 1);
  for (int i = 1; i < R - 1; ++i) {
    if (t.size(i) == 0) return Status::kSuccess;  // empty: nothing addressed
    int64_t span = 0;
    if (__builtin_mul_overflow(t.size(i) - 1, t.stride(i), &span) || __builtin_add_overflow(reach, span, &reach)) {
      reach = INT64_MAX;
      break;
    }
  }
  if (reach <= INT32_MAX) return Status::kSuccess;
  return fail(Status::kUnsupported, std::string("attn_decode: ") + name + " spans " + str(reach) +
                                        " elements within one sequence (its strides after the batch dim); the "
                                        "kernels index a sequence with int32 offsets");
}

Status check_dims(const char* name, const TensorView<4>& t, const char* layout, const int64_t (&want)[4]) {
  for (int i = 0; i < 4; ++i)
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(kOp, name, t.size(i), i, layout, want[i], i));
  return Status::kSuccess;
}

// The number of splits (tritonsrc/flash/decode_configs.py mirrors it for the
// JIT and the tuner): enough programs to fill kProgramsPerSm resident slots
// on every SM in one wave, rounded down (a partial second wave would run as
// long as a full one: 544 programs on 264 slots took 3 waves), each split
// keeping at least kKeysPerSplitMin keys of the capacity; one split when
// B * Hk * query tiles fill the slots already. Two slots per SM: the decode
// kernel's 200+ registers per thread (4 warps) let two CTAs reside.
constexpr int64_t kProgramsPerSm = 2;
int32_t choose_splits(const Decode& g, int32_t forced, int32_t num_sms) {
  if (forced > 0) return std::min(forced, kMaxSplits);
  const int64_t sms = num_sms > 0 ? num_sms : kDefaultSms;
  const int64_t m_tiles = (g.sq * (g.hq / g.hk) + 15) / 16;
  const int64_t programs = g.B * g.hk * m_tiles;
  if (programs == 0 || programs >= kProgramsPerSm * sms) return 1;  // 0: an empty batch launches nothing
  const int64_t want = kProgramsPerSm * sms / programs;
  const int64_t by_length = std::max<int64_t>(1, g.capacity / kKeysPerSplitMin);
  return static_cast<int32_t>(std::clamp<int64_t>(std::min(want, by_length), 1, kMaxSplits));
}

Status check_params(const DecodeParams& p, Decode* out) {
  Decode g;
  if (p.window_left < -1 || p.window_right < -1)
    return fail(Status::kInvalidArgument, "attn_decode: window_size values must be >= 0 or -1 (unbounded), got (" +
                                              str(p.window_left) + ", " + str(p.window_right) + ")");
  if (!(p.softcap >= 0.f) || p.softcap == INFINITY)
    return fail(Status::kInvalidArgument, "attn_decode: softcap must be finite and >= 0 (0: off)");
  if (p.softcap > 0.f && p.alibi_slopes.data)
    return fail(Status::kUnsupported, "attn_decode: softcap and alibi_slopes together are not supported");
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    return fail(Status::kInvalidArgument, "attn_decode: softmax_scale must be a positive finite number");
  if (p.num_sms < 0)
    return fail(Status::kInvalidArgument,
                "attn_decode: num_sms = " + str(p.num_sms) + " must be >= 0 (the device's SM count; 0: 132, an H200)");
  if (p.num_splits < 0 || p.num_splits > kMaxSplits)
    return fail(Status::kInvalidArgument, "attn_decode: num_splits must be in [0, 128] (0: automatic)");

  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "q", p.q));
  if (p.q.dtype != DType::kFloat16 && p.q.dtype != DType::kBFloat16)
    return fail(Status::kUnsupported, std::string("attn_decode: q must be fp16 or bf16, got ") + dtype_name(p.q.dtype));
  g.B = p.q.size(0), g.sq = p.q.size(1), g.hq = p.q.size(2), g.d = p.q.size(3);
  if (g.sq < 1) return fail(Status::kInvalidArgument, "attn_decode: q needs seqlen_q >= 1");
  if (g.d < 8 || g.d > 256 || g.d % 8 != 0)
    return fail(Status::kUnsupported, "attn_decode: head dim must be a multiple of 8 in [8, 256], got " + str(g.d));
  g.bucket = g.d <= 64 ? 64 : g.d <= 128 ? 128 : 256;

  g.paged = p.block_table.data != nullptr;
  for (const char* name : {"k_cache", "v_cache"}) {
    const TensorView<4>& c = name[0] == 'k' ? p.k_cache : p.v_cache;
    AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, name, c));
    AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, name, c.dtype, p.q.dtype));
    AOTRITON_RETURN_IF_ERROR(check_strides_i32(name, c));
  }
  g.hk = p.k_cache.size(2);
  const int64_t want_cache[4] = {p.k_cache.size(0), p.k_cache.size(1), g.hk, g.d};
  AOTRITON_RETURN_IF_ERROR(check_dims("k_cache", p.k_cache, "[., ., Hk, D]", want_cache));
  AOTRITON_RETURN_IF_ERROR(check_dims("v_cache", p.v_cache, "k_cache", want_cache));
  if (g.hk < 1 || g.hq % g.hk != 0)
    return fail(Status::kInvalidArgument, "attn_decode: q heads (" + str(g.hq) + ") must be a multiple of kv heads (" +
                                              str(g.hk) + ")");
  if (g.paged) {
    const TensorView<2>& bt = p.block_table;
    AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "block_table", bt));
    AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, "block_table", bt.dtype, DType::kInt32));
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(kOp, "block_table", bt.size(0), 0, "q", g.B, 0));
    AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "block_table stride", bt.stride(0)));
    g.page_size = p.k_cache.size(1);
    g.num_blocks = p.k_cache.size(0);
    if (g.page_size < 16 || g.page_size % 16 != 0)
      return fail(Status::kUnsupported,
                  "attn_decode: page size (k_cache.size(1) = " + str(g.page_size) + ") must be a multiple of 16");
    AOTRITON_RETURN_IF_ERROR(detail::checked_mul(kOp, "capacity (max_blocks * page_size)", {bt.size(1), g.page_size},
                                                 &g.capacity));
    // How the kernel walks the pages (decode_configs.page_tiles): pages holding whole tiles,
    // tiles holding whole pages (16 or 32 keys), or a lookup per key. The first two keep a
    // key's offset within its tile or page in 32 bits, so the row strides must allow that.
    const int64_t row_stride = std::max(p.k_cache.stride(1), p.v_cache.stride(1));
    constexpr int64_t tile_keys = detail::tables::kPageTileKeys, step_keys = detail::tables::kPageStepKeys;
    if (g.page_size % tile_keys == 0 && row_stride <= INT32_MAX / tile_keys)
      g.page_tiles = 1;
    else if (step_keys % g.page_size == 0 && row_stride <= INT32_MAX / step_keys)
      g.page_tiles = 2;
  } else {
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(kOp, "k_cache", p.k_cache.size(0), 0, "q", g.B, 0));
    g.capacity = p.k_cache.size(1);
  }
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "cache capacity", g.capacity));
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "num_blocks", g.num_blocks));

  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "cache_seqlens", p.cache_seqlens));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, "cache_seqlens", p.cache_seqlens.dtype, DType::kInt32));
  if (p.cache_seqlens.size(0) != g.B)
    return fail(Status::kInvalidArgument, "attn_decode: cache_seqlens must have B = " + str(g.B) + " entries, got " +
                                              str(p.cache_seqlens.size(0)));

  if ((p.k_new.data == nullptr) != (p.v_new.data == nullptr))
    return fail(Status::kInvalidArgument, "attn_decode: k_new and v_new must be given together");
  if (p.k_new.data) {
    g.snew = p.k_new.size(1);
    const int64_t want_new[4] = {g.B, g.snew, g.hk, g.d};
    for (const char* name : {"k_new", "v_new"}) {
      const TensorView<4>& t = name[0] == 'k' ? p.k_new : p.v_new;
      AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, name, t));
      AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, name, t.dtype, p.q.dtype));
      AOTRITON_RETURN_IF_ERROR(check_dims(name, t, "[B, Snew, Hk, D]", want_new));
      AOTRITON_RETURN_IF_ERROR(check_strides_i32(name, t));
      AOTRITON_RETURN_IF_ERROR(check_sequence_i32(name, t));
    }
    if (g.snew > g.capacity)
      return fail(Status::kInvalidArgument, "attn_decode: cache too small for the append: " + str(g.snew) +
                                                " new tokens, capacity " + str(g.capacity));
    // The append writes the caches: every (sequence or page, row, head) needs its own memory.
    if (g.snew > 0) {
      AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "k_cache", p.k_cache));
      AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "v_cache", p.v_cache));
    }
  }

  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, "out", p.out.dtype, p.q.dtype));
  const int64_t want_q[4] = {g.B, g.sq, g.hq, g.d};
  AOTRITON_RETURN_IF_ERROR(check_dims("out", p.out, "q", want_q));
  AOTRITON_RETURN_IF_ERROR(check_strides_i32("q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_strides_i32("out", p.out));
  AOTRITON_RETURN_IF_ERROR(check_sequence_i32("q", p.q));
  AOTRITON_RETURN_IF_ERROR(check_sequence_i32("out", p.out));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "out", p.out));
  AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "lse", p.lse));
  AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, "lse", p.lse.dtype, DType::kFloat32));
  const int64_t want_lse[3] = {g.B, g.hq, g.sq};
  for (int i = 0; i < 3; ++i)
    AOTRITON_RETURN_IF_ERROR(detail::check_same_dim(kOp, "lse", p.lse.size(i), i, "[B, Hq, Sq]", want_lse[i], i));
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "lse stride", std::max(p.lse.stride(0), p.lse.stride(1))));
  AOTRITON_RETURN_IF_ERROR(check_sequence_i32("lse", p.lse));
  AOTRITON_RETURN_IF_ERROR(detail::check_no_self_overlap(kOp, "lse", p.lse));
  // Sizes the kernels hold in int32 (grid, partial row index).
  int64_t rows = 0;
  AOTRITON_RETURN_IF_ERROR(detail::checked_mul(kOp, "B * Sq * Hq", {g.B, g.sq, g.hq}, &rows));
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "B * Sq * Hq", rows));
  AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "B * Hk", g.B * g.hk));

  if (p.alibi_slopes.data) {
    const TensorView<2>& a = p.alibi_slopes;
    AOTRITON_RETURN_IF_ERROR(detail::check_tensor(kOp, "alibi_slopes", a));
    AOTRITON_RETURN_IF_ERROR(detail::check_dtype(kOp, "alibi_slopes", a.dtype, DType::kFloat32));
    if ((a.size(0) != 1 && a.size(0) != g.B) || a.size(1) != g.hq)
      return fail(Status::kInvalidArgument, "attn_decode: alibi_slopes must be [1, Hq] or [B, Hq] = [" + str(g.B) +
                                                ", " + str(g.hq) + "], got [" + str(a.size(0)) + ", " +
                                                str(a.size(1)) + "]");
    AOTRITON_RETURN_IF_ERROR(detail::check_i32(kOp, "alibi_slopes stride", a.stride(0)));
    g.score_mod = 2;
  } else if (p.softcap > 0.f) {
    g.score_mod = 1;
  }

  g.splits = choose_splits(g, p.num_splits, p.num_sms);
  *out = g;
  return Status::kSuccess;
}

size_t workspace_bytes(const Decode& g) {
  if (g.splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(g.B * g.sq * g.hq) * static_cast<size_t>(g.splits);
  const size_t o_bytes = (rows * static_cast<size_t>(g.d) * 4 + 15) / 16 * 16;
  return o_bytes + rows * 4;
}

Status launch_all(const DecodeParams& p, const Decode& g, Stream stream, const KernelOptions* options) {
  using detail::KernelTensor;
  // [B, S, H, D] tensors and caches, strides in the rules' order (z, then rows, then heads).
  const auto zsh = [](const auto& t) { return detail::strided(t.data, t.stride(0), t.stride(1), t.stride(2)); };
  const int64_t stride_bt = g.paged ? p.block_table.stride(0) : 0;
  // Any valid pointer when unpaged (never read).
  const KernelTensor<1> table = detail::strided(g.paged ? p.block_table.data : p.cache_seqlens.data, stride_bt);
  const KernelTensor<2> lse = detail::strided(p.lse.data, p.lse.stride(0), p.lse.stride(1));
  if (g.snew > 0) {
    namespace kn = detail::kernels::kv_append;
    const kn::Inputs in{
        .K_new = zsh(p.k_new), .V_new = zsh(p.v_new), .K = zsh(p.k_cache), .V = zsh(p.v_cache),
        .cache_seqlens = p.cache_seqlens.data, .block_table = table,
        .seqlen_new = g.snew, .num_heads_k = g.hk, .head_dim = g.d, .capacity = g.capacity,
        .page_size = g.page_size, .num_blocks = g.num_blocks, .num_seqs = g.B,
    };
    kn::Functional f{p.q.dtype, g.bucket, g.paged};
    AOTRITON_RETURN_IF_ERROR(kn::launch(in, f, stream, nullptr));
  }
  const int64_t rows = g.B * g.sq * g.hq;
  float* o_part = static_cast<float*>(p.workspace);
  float* lse_part = g.splits > 1 ? reinterpret_cast<float*>(static_cast<char*>(p.workspace) +
                                                            (rows * g.splits * g.d * 4 + 15) / 16 * 16)
                                 : nullptr;
  {
    namespace kn = detail::kernels::attn_decode;
    const kn::Inputs in{
        .Q = zsh(p.q), .K = zsh(p.k_cache), .V = zsh(p.v_cache), .O = zsh(p.out), .LSE = lse,
        .O_part = o_part, .LSE_part = lse_part, .cache_seqlens = p.cache_seqlens.data, .block_table = table,
        .sm_scale = p.softmax_scale,
        .seqlen_q = g.sq, .seqlen_new = g.snew, .num_seqs = g.B, .num_heads_q = g.hq, .num_heads_k = g.hk,
        .head_dim = g.d, .capacity = g.capacity, .page_size = g.page_size, .num_blocks = g.num_blocks,
        .num_splits = g.splits, .causal = p.causal ? 1 : 0,
        .window_left = p.window_left, .window_right = p.window_right, .softcap = p.softcap,
        // Any valid pointer when ALiBi is off (never read).
        .alibi_slopes = detail::strided(p.alibi_slopes.data ? p.alibi_slopes.data : p.lse.data,
                                        p.alibi_slopes.data && p.alibi_slopes.size(0) > 1 ? p.alibi_slopes.stride(0)
                                                                                          : 0),
        .keys_per_split = (g.capacity + g.splits - 1) / g.splits,  // the autotune key
    };
    kn::Functional f{p.q.dtype, g.bucket, g.paged, g.score_mod, g.page_tiles};
    AOTRITON_RETURN_IF_ERROR(kn::launch(in, f, stream, options));
  }
  if (g.splits > 1) {
    namespace kn = detail::kernels::attn_decode_combine;
    const kn::Inputs in{.O = zsh(p.out), .LSE = lse, .O_part = o_part, .LSE_part = lse_part,
                        .seqlen_q = g.sq, .num_heads_q = g.hq, .head_dim = g.d, .total_rows = rows,
                        .num_splits = g.splits};
    kn::Functional f{p.q.dtype, g.bucket};
    // Launched plainly: started early, its programs waiting beside attn_decode's cost more than
    // the launch they hide (H100, bench_pdl.py --exclude attn_decode_combine: PDL then saves
    // 0.5-3.2 us in 7 of 8 decode rows instead of losing 2.7 us at B=1 32k; pdl_timeline.py: the
    // combine's share of the call grows 5.2 -> 10.7 us when it starts early; twenty-fourth session).
    detail::PlainLaunchScope plain(true);
    AOTRITON_RETURN_IF_ERROR(kn::launch(in, f, stream, nullptr));
  }
  return Status::kSuccess;
}

}  // namespace

Status attn_decode_workspace_size(const DecodeParams& p, size_t* bytes, int32_t* num_splits) noexcept try {
  detail::clear_error();
  if (!bytes) return fail(Status::kInvalidArgument, "attn_decode_workspace_size: bytes is null");
  Decode g;
  AOTRITON_RETURN_IF_ERROR(check_params(p, &g));
  *bytes = workspace_bytes(g);
  if (num_splits) *num_splits = g.splits;
  return Status::kSuccess;
} catch (...) {
  return detail::fail_exception("attn_decode_workspace_size: unexpected exception");
}

Status attn_decode(const DecodeParams& p, Stream stream, const KernelOptions* options) noexcept try {
  detail::clear_error();
  Decode g;
  AOTRITON_RETURN_IF_ERROR(check_params(p, &g));
  const size_t need = workspace_bytes(g);
  if (need > 0) {
    if (!p.workspace || p.workspace_bytes < need)
      return fail(Status::kInvalidArgument, "attn_decode: workspace of " + std::to_string(p.workspace_bytes) +
                                                " bytes, need " + std::to_string(need) +
                                                " (attn_decode_workspace_size)");
    if (reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0)
      return fail(Status::kInvalidArgument, "attn_decode: workspace must be 16-byte aligned");
  }
  // Outputs (and the caches the append writes) must not overlap what the
  // same launches read.
  AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
      kOp,
      {detail::span_of("out", p.out), detail::span_of("lse", p.lse), detail::bytes_of("workspace", p.workspace, need)},
      {detail::span_of("q", p.q), detail::span_of("k_cache", p.k_cache), detail::span_of("v_cache", p.v_cache),
       detail::span_of("k_new", p.k_new), detail::span_of("v_new", p.v_new),
       detail::span_of("cache_seqlens", p.cache_seqlens), detail::span_of("block_table", p.block_table),
       detail::span_of("alibi_slopes", p.alibi_slopes)}));
  if (g.snew > 0)
    AOTRITON_RETURN_IF_ERROR(detail::check_no_overlap(
        kOp, {detail::span_of("k_cache", p.k_cache), detail::span_of("v_cache", p.v_cache)},
        {detail::span_of("k_new", p.k_new), detail::span_of("v_new", p.v_new),
         detail::span_of("cache_seqlens", p.cache_seqlens), detail::span_of("block_table", p.block_table)}));
  if (g.B == 0 || g.hq == 0) return Status::kSuccess;
  // Up to three launches, the first writing the caches: resolve all first.
  return detail::resolve_then_launch([&] { return launch_all(p, g, stream, options); });
} catch (...) {
  return detail::fail_exception("attn_decode: unexpected exception");
}

}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
