"""Values both sides need are generated into aotriton_tables.h from the Python
tables (python/shared_constants.py); the C++ holds no hand copies."""
import re

import pytest

from python import generate, rules, rules_flash, rules_moe, shared_constants
from python.kernel_rules import declare_profile_subsets
from tritonsrc.flash.fwd_configs import head_dim_bucket
from tritonsrc.moe import configs as moe_configs

REPO = generate.REPO


def _array(text, name):
    m = re.search(rf"{name}\[\] = \{{([^}}]*)\}}", text)
    return [int(x) for x in m.group(1).split(",")]


def _scalar(text, name):
    return int(re.search(rf"{name} = (\d+);", text).group(1))


def test_header_holds_the_python_tables():
    h = shared_constants.header()
    assert _array(h, "kHeadDimBuckets") == rules_flash.HEAD_DIM_BUCKETS
    assert _scalar(h, "kMaxHeadDim") == 256
    from tritonsrc.flash.decode_configs import PAGE_STEP_KEYS, PAGE_TILE_KEYS, page_tiles
    assert _scalar(h, "kPageTileKeys") == PAGE_TILE_KEYS and _scalar(h, "kPageStepKeys") == PAGE_STEP_KEYS
    assert [page_tiles(p) for p in (16, 32, 48, 64, 80, 128)] == [2, 2, 0, 1, 0, 1]
    # Offsets within a tile or a page past int32: a lookup per key (64-bit offsets).
    assert page_tiles(64, row_stride=2**31 // 64) == 0 and page_tiles(16, row_stride=2**31 // 32) == 0
    assert _scalar(h, "kMaxExperts") == max(rules_moe.ALIGN_BLOCK_E) == max(rules_moe.TOPK_BLOCK_E)
    assert _scalar(h, "kAlignBlockT") == moe_configs.ALIGN_BLOCK_T
    assert _scalar(h, "kAlignSmallMax") == moe_configs.ALIGN_SMALL_MAX
    assert _scalar(h, "kDynamicQuantChunk") == moe_configs.DYNAMIC_QUANT_CHUNK
    assert _scalar(h, "kDynamicQuantMaxChunks") == moe_configs.DYNAMIC_QUANT_MAX_CHUNKS
    assert (_scalar(h, "kGemmSplitK"), _scalar(h, "kSplitKSms"), _scalar(h, "kSplitKTileN"),
            _scalar(h, "kSplitKMinK")) == (moe_configs.GEMM_SPLIT_K, moe_configs.SPLIT_K_SMS,
                                          moe_configs.SPLIT_K_TILE_N, moe_configs.SPLIT_K_MIN_K)
    from python import rules_moe_hopper
    assert _scalar(h, "kMoeHopperPersistentMinTokensPerExpert") == rules_moe_hopper.PERSISTENT_MIN_TOKENS_PER_EXPERT
    assert _scalar(h, "kScaleGroup") == rules_moe.per_token_group_quant_fp8.functional["GROUP"][0]
    assert _array(h, "kMoeBlockSizes") == list(moe_configs.BLOCK_SIZES_M)
    bins = _array(h, "kMoeMBins")
    for aligned, name in ((True, "kMoeBlockSizeMAligned"), (False, "kMoeBlockSizeMUnaligned")):
        rows = _array(h, name)
        for m in (1, 15, 16, 17, 64, 65, 300, 512, 513, 100000):  # the C++ lookup, replayed
            i = next((i for i, b in enumerate(bins) if m <= b), len(bins))
            assert rows[i] == moe_configs.block_size_m(m, aligned), (m, aligned)
    tall, min_tpe = _scalar(h, "kMoeTallBlockSizeM"), _scalar(h, "kMoeTallBlockMinTokensPerExpert")
    assert (tall, min_tpe) == (moe_configs.TALL_BLOCK_SIZE_M, moe_configs.TALL_BLOCK_MIN_TOKENS_PER_EXPERT)
    assert tall in moe_configs.BLOCK_SIZES_M
    buckets = _array(h, "kHeadDimBuckets")
    for d in range(1, 257):
        assert next(b for b in buckets if b >= d) == head_dim_bucket(d)


def test_generate_writes_the_header(tmp_path):
    import subprocess
    import sys
    subprocess.run([sys.executable, str(REPO / "python/generate.py"), "ninja", "--build-dir", str(tmp_path),
                    "--profile", "minimal", "--archs", "90"], check=True, capture_output=True)
    assert (tmp_path / "gen" / "aotriton_tables.h").read_text() == shared_constants.header()


@pytest.mark.parametrize("pattern", [
    r"kMaxExperts\s*=\s*\d", r"kPageTileKeys\s*=\s*\d", r"kAlignBlockT\s*=\s*\d",
    r"kAlignSmallMax\s*=\s*\d", r"kScaleGroup\s*=\s*\d", r"kDynamicQuantChunk\s*=\s*\d",
    r"kDynamicQuantMaxChunks\s*=\s*\d",
    r"kGemmSplitK\s*=\s*\d", r"kSms\s*=\s*132",
    r"while \(b < d\) b \*= 2", r"num_tokens <= 64\)", r"block_size != 16 &&",
])
def test_no_hand_copies_in_the_runtime(pattern):
    hits = [f"{p.relative_to(REPO)}" for p in sorted((REPO / "v2src").rglob("*"))
            if p.suffix in (".h", ".cc") and re.search(pattern, p.read_text())]
    assert not hits, f"{pattern} hand-copied in {hits}"


def test_profile_subset_tables_must_name_kernels():
    with pytest.raises(ValueError, match="name no kernel"):
        declare_profile_subsets(rules.KERNELS, "ci", {"no_such_kernel": lambda f: True})


def test_flash_profile_membership_is_declared_on_the_kernels():
    by_name = {k.name: k for k in rules.KERNELS}
    for name in ("attn_fwd", "bwd_preprocess", "bwd_dkdv", "bwd_dq"):
        assert {"ci", "gputest"} <= set(by_name[name].profiles), name


def test_tall_blocks_only_for_aligned_layers_with_many_slots_per_expert():
    """block_size_m with topk/num_experts: the Mixtral-like layer (E=8, top-2)
    gets 128-row blocks from M=512 (128 slots per expert), the DeepSeek-like
    one (E=256, top-8: 16 slots per expert at M=512) keeps 64; unaligned
    shapes and decode sizes (slots per expert <= M) never change."""
    bsm = moe_configs.block_size_m
    assert bsm(512, topk=2, num_experts=8) == 128 and bsm(512) == 64
    assert bsm(508, topk=2, num_experts=8) == 64  # 127 slots per expert
    assert bsm(512, topk=8, num_experts=256) == 64
    assert bsm(4096, topk=8, num_experts=256) == 128 == bsm(4096)
    assert bsm(512, aligned=False, topk=2, num_experts=8) == bsm(512, aligned=False)
    assert bsm(64, topk=8, num_experts=8) == bsm(64) == 16  # slots per expert <= M: decode never qualifies
    for m in (1, 16, 64, 65, 300, 512, 513, 4096):
        for topk, e in ((1, 1), (2, 8), (8, 256), (6, 64)):
            got = bsm(m, topk=topk, num_experts=e)
            assert got in (bsm(m), moe_configs.TALL_BLOCK_SIZE_M)
            assert got == bsm(m) or -(-m * topk // e) >= moe_configs.TALL_BLOCK_MIN_TOKENS_PER_EXPERT
